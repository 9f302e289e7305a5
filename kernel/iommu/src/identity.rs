//! What a unit can do, in the vendor-neutral terms of the IommuControl
//! `Identify` invocation (DESIGN.md, "The IOMMU objects").

use crate::smmuv3::regs::Features;
use crate::vtd::regs::{Capability, ExtendedCapability};
#[cfg(any(test, feature = "decode"))]
use core::fmt;

/// Which architecture a unit implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Intel VT-d.
    IntelVtd,
    /// Arm SMMUv3.
    ArmSmmuV3,
}

/// Vendor-neutral capabilities of one IOMMU unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Architecture.
    pub vendor: Vendor,
    /// First stage / stage 1 translation (VT-d ECAP.FLTS, SMMU IDR0.S1P).
    pub first_stage: bool,
    /// Second stage / stage 2 translation (VT-d legacy or ECAP.SLTS, SMMU IDR0.S2P).
    pub second_stage: bool,
    /// Hardware nesting (VT-d ECAP.NEST, SMMU S1P and S2P).
    pub nesting: bool,
    /// Untranslated pass-through (VT-d ECAP.PT, SMMU bypass STEs).
    pub pass_through: bool,
    /// PASID / SubstreamID width in bits (0: none).
    pub pasid_bits: u32,
    /// Domain id / VMID width in bits.
    pub domain_id_bits: u32,
    /// Supported page sizes, bit n set for 2^n bytes.
    pub page_sizes: u64,
    /// Largest input (IOVA / IPA) size in bits.
    pub input_bits: u32,
}

impl Identity {
    /// Decodes a VT-d unit's CAP/ECAP.
    pub fn vtd(cap: Capability, ecap: ExtendedCapability) -> Self {
        let mut page_sizes = 1 << 12;
        if cap.second_stage_2m() {
            page_sizes |= 1 << 21;
        }
        if cap.second_stage_1g() {
            page_sizes |= 1 << 30;
        }
        Self {
            vendor: Vendor::IntelVtd,
            first_stage: ecap.smts() && ecap.flts(),
            second_stage: !ecap.smts() || ecap.slts(),
            nesting: ecap.smts() && ecap.nest() && ecap.flts() && ecap.slts(),
            pass_through: ecap.pt(),
            pasid_bits: ecap.pasid_bits(),
            domain_id_bits: cap.domain_id_bits(),
            page_sizes,
            input_bits: cap.mgaw(),
        }
    }

    /// Decodes an SMMUv3's ID registers (4 KiB granule sizes only: the driver's).
    pub fn smmuv3(features: &Features) -> Self {
        let idr0 = features.idr0;
        let page_sizes = if features.idr5.gran4k() {
            1 << 12 | 1 << 21 | 1 << 30
        } else {
            0
        };
        Self {
            vendor: Vendor::ArmSmmuV3,
            first_stage: idr0.s1p(),
            second_stage: idr0.s2p(),
            nesting: idr0.s1p() && idr0.s2p(),
            pass_through: true,
            pasid_bits: features.idr1.ssidsize(),
            domain_id_bits: if idr0.vmid16() { 16 } else { 8 },
            page_sizes,
            input_bits: features.idr5.oas_bits().min(48),
        }
    }
}

/// What a unit offers for recoverable faults and dirty tracking, decoded
/// from its ID registers: so a driver can tell a unit "as QEMU 10.0.2"
/// (none of it) from one "per the specification" (the executable models'
/// [`crate::smmuv3::regs::Features::PER_SPEC`], or a VT-d ECAP with PRS and SLADS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extensions {
    /// Architecture.
    pub vendor: Vendor,
    /// Width of PASID / SubstreamID tags on DMA, in bits (VT-d: ECAP.PASID
    /// with PSS in scalable mode; SMMU: IDR1.SSIDSIZE). 0: untagged only.
    pub pasid_bits: u32,
    /// Page requests: VT-d ECAP.PRS with SMTS; SMMU IDR0.PRI.
    pub page_requests: bool,
    /// Stalled transactions resumed by software: SMMU IDR0.STALL_MODEL
    /// 0b00 or 0b10. VT-d has no stall model.
    pub stall: bool,
    /// Hardware dirty state of the second stage / stage 2: VT-d
    /// ECAP.SLADS (with SMTS; PASID entry SSADE); SMMU IDR0.HTTU = 2 (STE.S2HD).
    pub dirty_tracking: bool,
    /// First-stage A/D updates: VT-d with ECAP.FLTS (always done, live in
    /// QEMU); SMMU: false (stage-1 HTTU is not used by this driver).
    pub first_stage_dirty: bool,
}

impl Extensions {
    /// Decodes a VT-d unit's ECAP.
    pub fn vtd(ecap: ExtendedCapability) -> Self {
        Self {
            vendor: Vendor::IntelVtd,
            pasid_bits: if ecap.smts() { ecap.pasid_bits() } else { 0 },
            page_requests: ecap.smts() && ecap.prs(),
            stall: false,
            dirty_tracking: ecap.smts() && ecap.slads(),
            first_stage_dirty: ecap.smts() && ecap.flts(),
        }
    }

    /// Decodes an SMMUv3's ID registers.
    pub fn smmuv3(features: &Features) -> Self {
        let idr0 = features.idr0;
        Self {
            vendor: Vendor::ArmSmmuV3,
            pasid_bits: features.idr1.ssidsize(),
            page_requests: idr0.pri(),
            stall: idr0.stall_model() != 1,
            dirty_tracking: idr0.s2p() && idr0.httu() >= 2,
            first_stage_dirty: false,
        }
    }
}

#[cfg(any(test, feature = "decode"))]
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: first-stage={} second-stage={} nesting={} pass-through={} pasid-bits={} domain-id-bits={} page-sizes={:#x} input-bits={}",
            self.vendor,
            self.first_stage,
            self.second_stage,
            self.nesting,
            self.pass_through,
            self.pasid_bits,
            self.domain_id_bits,
            self.page_sizes,
            self.input_bits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_as_qemu_and_per_spec() {
        let qemu = Extensions::vtd(ExtendedCapability(0x0000_8900_00f0_0f4a));
        assert!(!qemu.page_requests && !qemu.dirty_tracking && qemu.first_stage_dirty);
        let spec = Extensions::vtd(ExtendedCapability(
            0x0000_8900_00f0_0f4a | 1 << 29 | 1 << 45,
        ));
        assert!(spec.page_requests && spec.dirty_tracking && !spec.stall);
        let smmu = Extensions::smmuv3(&Features::QEMU);
        assert!(!smmu.page_requests && !smmu.stall && !smmu.dirty_tracking);
        assert_eq!(smmu.pasid_bits, 0);
    }

    #[test]
    fn qemu_units() {
        let vtd = Identity::vtd(
            Capability(0x00d2_008c_222f_0606),
            ExtendedCapability(0x00f0_0f4a),
        );
        assert!(vtd.second_stage && !vtd.first_stage && !vtd.nesting && vtd.pass_through);
        assert_eq!(
            (vtd.pasid_bits, vtd.domain_id_bits, vtd.input_bits),
            (0, 16, 48)
        );
        assert_eq!(vtd.page_sizes, 1 << 12 | 1 << 21 | 1 << 30);
        let flts = Identity::vtd(
            Capability(0x00d2_008c_222f_0606 | 1 << 56),
            ExtendedCapability(0x0000_8900_00f0_0f4a),
        );
        assert!(flts.first_stage && !flts.second_stage && !flts.nesting);
        assert_eq!(flts.pasid_bits, 1);
        let smmu = Identity::smmuv3(&Features::QEMU);
        assert!(smmu.first_stage && smmu.second_stage && smmu.nesting);
        assert_eq!(
            (smmu.pasid_bits, smmu.domain_id_bits, smmu.input_bits),
            (0, 16, 44)
        );
        assert!(std::format!("{smmu}").starts_with("ArmSmmuV3: first-stage=true"));
    }
}
