//! `bitplan`: the mixed-precision planner's command line (and, later, its service).

mod cli;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
