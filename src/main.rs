//! The `patrol` binary: the Functions custom handler (`patrol serve`, or bare when the host starts it) and
//! the operator's CLI. Everything lives in the library; see `patrol::cli`.

fn main() -> std::process::ExitCode {
    fixed_mmap_threshold();
    patrol::cli::main()
}

/// glibc's `malloc` serves blocks of 128 KiB and more with `mmap` and returns them to the system when they are
/// freed — until a big block is freed: then it raises that threshold (up to 32 MiB) and serves later big blocks
/// from the heap, where a freed one stays part of the process. A CLI run builds a few such buffers (the
/// policy's parse, response bodies, the output) beside many small objects; with the threshold fixed they go
/// back to the system as soon as they are freed. `patrol plan` for 10,000 tokens: see docs/benchmarks.md.
/// Other C libraries (the production package is built with musl) have no such setting.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
