//! Service checks: [`check`] runs one check (TCP, HTTP(S), DNS, command) against one address;
//! [`schedule`] runs this site's own check and the probes of its peers' services every interval
//! and reports the results to membership.

pub mod check;
pub mod schedule;

pub use check::{Check, is_local_resource_error};
pub use schedule::run;
