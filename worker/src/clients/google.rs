//! Google Calendar client (issue #6) — being written.
