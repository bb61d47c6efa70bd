//! Helpers shared by every area of the integration tests.

use std::sync::Arc;

/// Everything logged by this test binary, captured by a process-wide subscriber (a thread-scoped one
/// misses events whose callsite interest another test thread cached first).
pub fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    use std::io::Write;
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Buf(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(sub)
            .expect("only support::captured_logs installs a global subscriber in the test binary");
        buf
    })
    .clone()
}
