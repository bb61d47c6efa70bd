//! The `patrol` binary: the Functions custom handler (`patrol serve`, or bare when the host starts it) and
//! the operator's CLI. Everything lives in the library; see `patrol::cli`.

fn main() -> std::process::ExitCode {
    patrol::cli::main()
}
