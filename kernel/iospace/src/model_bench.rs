//! The page-request round trip of the host tests, run for `cargo xtask
//! bench` (feature `model-bench`, host only): the scenario of
//! `tests/requests.rs`, compiled here from the tests' own support
//! (`tests/common`), against the executable VT-d and SMMUv3 models. The
//! counts are the model's queue entries, not QEMU's (QEMU 10.0.2 raises
//! no page requests).

#[path = "../tests/common/mod.rs"]
mod common;

use std::boxed::Box;
use std::string::{String, ToString};

/// Queue entries (VT-d descriptors, waits included) of one page-request
/// round trip on the VT-d model: the driver's `Invalidate` of the page it
/// mapped, then its `Respond(Success)`. `Err` names the check of the
/// scenario that failed.
pub fn vtd_page_request_round_trip() -> Result<u64, String> {
    counted(common::page_requests::vtd_round_trip)
}

/// The same on the SMMUv3 model (commands, `CMD_SYNC` included).
pub fn smmu_page_request_round_trip() -> Result<u64, String> {
    counted(common::page_requests::smmu_round_trip)
}

/// Runs `scenario`; its failed assertion (a panic) becomes the error.
fn counted(scenario: fn() -> common::page_requests::RoundTrip) -> Result<u64, String> {
    std::panic::catch_unwind(scenario)
        .map(|cost| cost.total())
        .map_err(|panic: Box<dyn core::any::Any + Send>| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a check of the scenario failed".to_string());
            format!("the page-request round trip failed in the model: {why}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_vendors_count_four_entries() {
        assert_eq!(vtd_page_request_round_trip(), Ok(4));
        assert_eq!(smmu_page_request_round_trip(), Ok(4));
    }

    #[test]
    fn a_failed_check_is_the_error() {
        let failed = counted(|| panic!("no record for the request"));
        assert_eq!(
            failed,
            Err(
                "the page-request round trip failed in the model: no record for the request"
                    .to_string()
            )
        );
    }
}
