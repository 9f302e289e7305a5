//! The IOMMU cross-check: QEMU's behaviour against the executable models.
//!
//! With `tests=xcheck` the kernel programs real IOMMU structures for each
//! case, runs edu DMA through them in QEMU and prints, for each case, the
//! structures it wrote and what happened:
//!
//! ```text
//! xcheck begin NAME vendor=smmu|vtd
//! xcheck reg KEY=VALUE ...          registers the model starts its walk from
//! xcheck mem PA VALUE               every non-zero 64-bit word of the kernel's frames
//! xcheck dma rid=R iova=I access=read|write pa=P   one DMA; P is where it should land
//! xcheck observed landed|blocked faults=CODE,CODE,...   what QEMU did
//! xcheck end NAME
//! ```
//!
//! Here the same words go into the model's simulated memory, the model
//! translates each DMA, and the case passes when QEMU and the model agree:
//! both translate every DMA to the stated address and the data landed, or
//! the model refuses one and QEMU blocked the transfer recording exactly the
//! fault codes the model predicts (none for a silent abort).

use std::collections::{BTreeMap, BTreeSet};

use iommu::model::smmu::{Outcome, SmmuModel, SmmuRequest};
use iommu::model::vtd::{Request, VtdModel};
use iommu::model::{Access, SimMemory};
use iommu::smmuv3::regs::{Features, Idr0, Idr1, Idr3, Idr5};
use iommu::vtd::regs::RootTableMode;

/// One DMA of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dma {
    requester: u16,
    iova: u64,
    write: bool,
    expected_pa: u64,
}

/// What QEMU did with a case's DMAs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    landed: bool,
    faults: BTreeSet<u32>,
}

/// One case as the kernel reported it.
#[derive(Debug, Default)]
pub struct Case {
    /// Its name.
    pub name: String,
    vendor: String,
    registers: BTreeMap<String, String>,
    memory: Vec<(u64, u64)>,
    dmas: Vec<Dma>,
    observed: Option<Observed>,
    complete: bool,
}

/// Collects cases from serial lines.
#[derive(Debug, Default)]
pub struct Collector {
    cases: Vec<Case>,
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn pairs(words: &[&str]) -> BTreeMap<String, String> {
    words
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Collector {
    /// Takes one serial line; returns whether it belonged to the cross-check.
    pub fn see(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("xcheck ") else {
            return false;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["begin", name, tail @ ..] => {
                let vendor = pairs(tail).remove("vendor").unwrap_or_default();
                self.cases.push(Case {
                    name: name.to_string(),
                    vendor,
                    ..Case::default()
                });
            }
            ["reg", tail @ ..] => {
                if let Some(case) = self.cases.last_mut() {
                    case.registers.extend(pairs(tail));
                }
            }
            ["mem", pa, value] => {
                if let (Some(case), Some(pa), Some(value)) =
                    (self.cases.last_mut(), number(pa), number(value))
                {
                    case.memory.push((pa, value));
                }
            }
            ["dma", tail @ ..] => {
                let fields = pairs(tail);
                let field = |k: &str| fields.get(k).and_then(|v| number(v));
                if let (Some(case), Some(rid), Some(iova), Some(pa)) = (
                    self.cases.last_mut(),
                    field("rid"),
                    field("iova"),
                    field("pa"),
                ) {
                    case.dmas.push(Dma {
                        requester: rid as u16,
                        iova,
                        write: fields.get("access").map(String::as_str) == Some("write"),
                        expected_pa: pa,
                    });
                }
            }
            ["observed", verdict, tail @ ..] => {
                let fields = pairs(tail);
                let faults = fields
                    .get("faults")
                    .map(|list| {
                        list.split(',')
                            .filter_map(number)
                            .map(|code| code as u32)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(case) = self.cases.last_mut() {
                    case.observed = Some(Observed {
                        landed: *verdict == "landed",
                        faults,
                    });
                }
            }
            ["end", name] => {
                if let Some(case) = self.cases.last_mut().filter(|c| c.name == *name) {
                    case.complete = true;
                }
            }
            _ => {}
        }
        true
    }

    /// The cases seen, in order.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }
}

/// What the model says about one DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prediction {
    Translated(u64),
    /// Refused; the code the unit records (VT-d fault reason, SMMU event type).
    Fault(u32),
    /// Refused without a record (SMMU abort STE).
    Silent,
}

impl Case {
    fn register(&self, key: &str) -> Result<u64, String> {
        self.registers
            .get(key)
            .and_then(|v| number(v))
            .ok_or_else(|| format!("the kernel reported no register {key}"))
    }

    fn predict(&self, memory: &SimMemory, dma: &Dma) -> Result<Prediction, String> {
        let access = if dma.write {
            Access::Write
        } else {
            Access::Read
        };
        match self.vendor.as_str() {
            "vtd" => {
                let mode = match self.registers.get("mode").map(String::as_str) {
                    Some("legacy") => RootTableMode::Legacy,
                    Some("scalable") => RootTableMode::Scalable,
                    other => return Err(format!("unknown VT-d mode {other:?}")),
                };
                let mut model = VtdModel::full(self.register("root")?, mode);
                if self.register("nest")? == 0 {
                    model = model.qemu_mode();
                }
                let request = Request {
                    source_id: dma.requester,
                    pasid: None,
                    address: dma.iova,
                    access,
                };
                Ok(match model.translate(memory, request) {
                    Ok(pa) => Prediction::Translated(pa),
                    Err(fault) => Prediction::Fault(u32::from(fault.reason)),
                })
            }
            "smmu" => {
                let model = SmmuModel {
                    strtab_base: self.register("strtab_base")?,
                    strtab_cfg: self.register("strtab_cfg")? as u32,
                    features: Features {
                        idr0: Idr0(self.register("idr0")? as u32),
                        idr1: Idr1(self.register("idr1")? as u32),
                        idr3: Idr3(self.register("idr3")? as u32),
                        idr5: Idr5(self.register("idr5")? as u32),
                    },
                };
                let request = SmmuRequest {
                    stream_id: u32::from(dma.requester),
                    substream_id: None,
                    address: dma.iova,
                    access,
                };
                Ok(match model.translate(memory, request) {
                    Outcome::Translated(pa) => Prediction::Translated(pa),
                    Outcome::Aborted => Prediction::Silent,
                    Outcome::Fault(event) => Prediction::Fault(u32::from(event.kind.code())),
                })
            }
            other => Err(format!("unknown vendor {other:?}")),
        }
    }

    /// The VT-d model with every feature (real NEST=1 hardware).
    fn predict_full(&self, memory: &SimMemory, dma: &Dma) -> Result<Prediction, String> {
        if self.vendor != "vtd" {
            return Err("only VT-d cases have a full-feature model".into());
        }
        let model = VtdModel::full(self.register("root")?, RootTableMode::Scalable);
        let request = Request {
            source_id: dma.requester,
            pasid: None,
            address: dma.iova,
            access: if dma.write {
                Access::Write
            } else {
                Access::Read
            },
        };
        Ok(match model.translate(memory, request) {
            Ok(pa) => Prediction::Translated(pa),
            Err(fault) => Prediction::Fault(u32::from(fault.reason)),
        })
    }

    /// Runs the model over the case and compares it with QEMU; `Ok` carries
    /// a one-line summary of the agreement, `Err` the disagreement.
    pub fn judge(&self) -> Result<String, String> {
        if !self.complete {
            return Err("the kernel did not finish reporting this case".into());
        }
        let observed = self
            .observed
            .as_ref()
            .ok_or("the kernel reported no observation")?;
        if self.dmas.is_empty() {
            return Err("the case has no DMA".into());
        }
        let memory = SimMemory::new(1 << 48);
        for &(pa, value) in &self.memory {
            iommu::PhysMem::write_u64(&memory, pa, value);
        }
        let mut predicted_faults = BTreeSet::new();
        let mut all_translate = true;
        for dma in &self.dmas {
            match self.predict(&memory, dma)? {
                Prediction::Translated(pa) if pa == dma.expected_pa => {}
                Prediction::Translated(pa) => {
                    return Err(format!(
                        "the model translates {:#x} to {pa:#x}, not to {:#x} where the kernel expects it",
                        dma.iova, dma.expected_pa
                    ));
                }
                Prediction::Fault(code) => {
                    all_translate = false;
                    predicted_faults.insert(code);
                }
                Prediction::Silent => all_translate = false,
            }
        }
        let model = if all_translate {
            "translates".to_string()
        } else if predicted_faults.is_empty() {
            "blocks silently".to_string()
        } else {
            format!("blocks with {}", codes(&predicted_faults))
        };
        let qemu = if observed.landed {
            "data landed".to_string()
        } else if observed.faults.is_empty() {
            "blocked, nothing recorded".to_string()
        } else {
            format!("blocked with {}", codes(&observed.faults))
        };
        let agree = if all_translate {
            observed.landed
        } else {
            !observed.landed && observed.faults == predicted_faults
        };
        let mut summary = format!("model {model}; QEMU {qemu}");
        if !agree {
            return Err(summary);
        }
        if self
            .registers
            .get("full_model_translates")
            .map(String::as_str)
            == Some("1")
        {
            // The structures use what QEMU lacks; real hardware with the
            // feature (the full model) must translate them where intended.
            for dma in &self.dmas {
                match self.predict_full(&memory, dma)? {
                    Prediction::Translated(pa) if pa == dma.expected_pa => {}
                    other => {
                        return Err(format!(
                            "{summary}; but the full model (NEST=1 hardware) gives {other:?} for {:#x}",
                            dma.iova
                        ));
                    }
                }
            }
            summary.push_str("; full model (NEST=1 hardware) translates");
        }
        Ok(summary)
    }
}

fn codes(set: &BTreeSet<u32>) -> String {
    set.iter()
        .map(|c| format!("{c:#x}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(lines: &[&str]) -> Collector {
        let mut collector = Collector::default();
        for line in lines {
            collector.see(line);
        }
        collector
    }

    /// A legacy-mode VT-d root table whose entries are all not present: the
    /// model must refuse with reason 0x1, and a QEMU run that recorded 0x1
    /// agrees while one where data landed does not.
    #[test]
    fn blocked_legacy_case_agrees_only_with_a_matching_fault() {
        let lines = [
            "xcheck begin blocked vendor=vtd",
            "xcheck reg root=0x10000 mode=legacy nest=0",
            "xcheck dma rid=0x18 iova=0x2000 access=write pa=0x5000",
            "xcheck observed blocked faults=0x1",
            "xcheck end blocked",
        ];
        let collector = collect(&lines);
        assert_eq!(collector.cases().len(), 1);
        let verdict = collector.cases()[0].judge();
        assert!(verdict.is_ok(), "{verdict:?}");

        let mut landed = lines;
        landed[3] = "xcheck observed landed";
        let verdict = collect(&landed).cases()[0].judge();
        assert!(verdict.is_err(), "{verdict:?}");

        let mut other_reason = lines;
        other_reason[3] = "xcheck observed blocked faults=0x2";
        assert!(collect(&other_reason).cases()[0].judge().is_err());
    }

    #[test]
    fn incomplete_cases_fail() {
        let collector = collect(&[
            "xcheck begin cut vendor=vtd",
            "xcheck reg root=0x10000 mode=legacy nest=0",
        ]);
        assert!(collector.cases()[0].judge().is_err());
    }

    #[test]
    fn other_lines_are_not_taken() {
        let mut collector = Collector::default();
        assert!(!collector.see("test foo ... ok"));
        assert!(collector.see("xcheck begin x vendor=smmu"));
    }
}
