pub mod beteiligte;
pub mod calendar;
