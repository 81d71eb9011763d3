//! Command line: `serve` (default), `migrate`, `demo`, `simulate-azure`, `bench`.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
