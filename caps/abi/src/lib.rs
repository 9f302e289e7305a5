//! The Portcullis kernel ABI: the one source shared by kernel and userland.
#![no_std]
#![forbid(unsafe_code)]
