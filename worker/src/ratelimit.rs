//! The shared Google request budget (issue #6) — being written.
