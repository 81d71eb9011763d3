fn main() -> std::process::ExitCode {
    odm_devops::cli::main()
}
