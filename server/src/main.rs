//! `bitplan`: the mixed-precision planner's command line and service.

use std::process::ExitCode;

fn main() -> ExitCode {
    bitplan::cli::run()
}
