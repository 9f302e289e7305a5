//! The Portcullis capability model, shared by the kernel and the host checker.
#![no_std]
#![forbid(unsafe_code)]
