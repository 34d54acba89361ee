//! Gateway mode (see below).
