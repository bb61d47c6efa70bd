//! Secret stores: the embedded encrypted file store, and the Key Vault store through the official SDK
//! against patrol-emulator over TLS.

mod file;
mod keyvault;
mod keyvault_emulator;
