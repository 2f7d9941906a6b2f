//! `bulkflow-edge`: the agent that sits next to the CPEs.
//!
//! The binary only parses arguments and wires modules together; each command's
//! work lives in its own module.

mod decode;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bulkflow-edge",
    version,
    about = "bulkflow edge agent: accepts TR-069 Bulk Data reports from CPEs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one Bulk Data request body and print one JSON line per parameter.
    Decode(decode::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode(args) => decode::run(&args),
    }
}
