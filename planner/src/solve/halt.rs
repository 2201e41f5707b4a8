//! How a caller stops a plan it no longer wants: a flag another thread raises (a dropped request,
//! a cancelled job) and a deadline. The planner checks it before every solve and once per group
//! of the exact front's dynamic program, and no ILP solve runs past the deadline.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A stop request: shared flags and an optional deadline. [`Halt::default`] never stops.
#[derive(Debug, Clone, Default)]
pub struct Halt {
    flags: Vec<Arc<AtomicBool>>,
    deadline: Option<Instant>,
}

impl Halt {
    /// Stops once `flag` is raised or `deadline` passes.
    pub fn new(flag: Arc<AtomicBool>, deadline: Option<Instant>) -> Halt {
        Halt {
            flags: vec![flag],
            deadline,
        }
    }

    /// This halt, stopping also once `flag` is raised.
    pub fn or_when(mut self, flag: Arc<AtomicBool>) -> Halt {
        self.flags.push(flag);
        self
    }

    /// `Err(Error::Stopped)` once the flag is raised or the deadline has passed.
    pub fn check(&self) -> Result<()> {
        if self.flags.iter().any(|f| f.load(Ordering::Relaxed)) {
            return Err(Error::Stopped("the plan was cancelled".into()));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Stopped("the plan ran past its deadline".into()));
        }
        Ok(())
    }

    /// Seconds left before the deadline (infinite without one).
    pub fn remaining_s(&self) -> f64 {
        self.deadline.map_or(f64::INFINITY, |d| {
            d.saturating_duration_since(Instant::now()).as_secs_f64()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stops_on_the_flag_or_past_the_deadline() {
        assert!(Halt::default().check().is_ok());
        assert_eq!(Halt::default().remaining_s(), f64::INFINITY);
        let flag = Arc::new(AtomicBool::new(false));
        let halt = Halt::new(flag.clone(), Some(Instant::now() + Duration::from_secs(60)));
        assert!(halt.check().is_ok());
        assert!(halt.remaining_s() > 59.0 && halt.remaining_s() <= 60.0);
        flag.store(true, Ordering::Relaxed);
        assert!(halt.check().unwrap_err().to_string().contains("cancelled"));
        let second = Arc::new(AtomicBool::new(true));
        let either = Halt::new(Arc::default(), None).or_when(second);
        assert!(either
            .check()
            .unwrap_err()
            .to_string()
            .contains("cancelled"));
        let late = Halt::new(Arc::default(), Some(Instant::now()));
        assert!(late.check().unwrap_err().to_string().contains("deadline"));
        assert_eq!(late.remaining_s(), 0.0);
    }
}
