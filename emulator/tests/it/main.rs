//! patrol-emulator's integration tests: one binary, one module per area.

mod keyvault;
