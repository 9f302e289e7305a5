//! The host tests' world: the layer's [`State`] driving the `iommu`
//! crate's VT-d or SMMUv3 driver over the executable models, with the
//! capability state the effects come from kept beside it (IoSpaces,
//! their IO mappings, attached devices), effects emitted in the order the
//! `caps` model emits them, and DMA through the model.
#![allow(dead_code)]

pub mod page_requests;

use caps::{Effect, FaultSource, ObjectId, ObjectKind, Rights};
use iommu::model::smmu::{Outcome, SmmuRequest};
use iommu::model::smmu_device::SimSmmu;
use iommu::model::vtd::Request;
use iommu::model::vtd_device::SimVtd;
use iommu::model::{Access, DeviceOutcome, SimFrames, SimMemory, TransactionId};
use iommu::pagetable::{PageSize, PageTable, PageTableFormat, Perms};
use iommu::smmuv3::pagetable::{Stage1Format, levels_4k};
use iommu::smmuv3::{BlockPolicy, Smmu};
use iommu::vtd::VtdUnit;
use iommu::vtd::regs::RootTableMode;
use iommu::vtd::tables::FirstStageFormat;
use iommu::{FrameAllocator, PhysAddr, PhysMem, PollLimit};
use iospace::{DmaFault, Env, Flaw, IoUnit, SpaceAt, State};
use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

pub const MIB: u64 = 1 << 20;
/// Simulated RAM.
pub const MEMORY: u64 = 512 * MIB;
/// The unit's boot tables.
const BOOT_FRAMES: (u64, u64) = (16 * MIB, 32 * MIB);
/// The table pool (4,096 pages).
const POOL: (u64, u64) = (32 * MIB, 48 * MIB);
/// IoSpace object pages, stage-1 table pages and DMA frames, bumped.
const OBJECTS: u64 = 64 * MIB;
/// The IPA of the data pages of each IoSpace (`DATA_PAGES` of them).
pub const DATA_IPA: u64 = 0;
pub const DATA_PAGES: u64 = 16;
/// The IOVA a nest's stage 1 maps to [`DATA_IPA`], page for page.
pub const IOVA: u64 = 0x10_0000;
/// Where a nest's stage-1 table pages sit in the IoSpace.
const STAGE1_IPA: u64 = 0x4000_0000;
const STAGE1_PAGES: u64 = 6;

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static FLAW: Cell<Option<Flaw>> = const { Cell::new(None) };
}

/// The tests' environment: log lines kept, one flaw at a time plantable.
pub struct TestEnv;

impl Env for TestEnv {
    type Notify = u32;
    fn same_notification(a: &u32, b: &u32) -> bool {
        a == b
    }
    fn log(line: &dyn ktext::Text) {
        struct Line(String);
        impl ktext::Sink for Line {
            fn str(&mut self, text: &str) {
                self.0.push_str(text);
            }
        }
        let mut text = Line(String::new());
        line.write(&mut text);
        LOG.with(|l| l.borrow_mut().push(text.0));
    }
    fn broken(flaw: Flaw) -> bool {
        FLAW.with(|f| f.get() == Some(flaw))
    }
    /// The tests' clock counts steps: a request waits 100 of them.
    const RESPONSE_DEADLINE: u64 = 100;
}

/// Plants `flaw` in this thread's layer (`None`: none).
pub fn plant(flaw: Option<Flaw>) {
    FLAW.with(|f| f.set(flaw));
}

/// The layer's log lines so far (and forgets them).
pub fn take_log() -> Vec<String> {
    LOG.with(|l| core::mem::take(&mut *l.borrow_mut()))
}

/// A simulated unit as the tests see it: DMA and the faults it recorded.
pub trait Model {
    /// One transaction: the physical address it reached, or `None` if it
    /// was refused.
    fn transact(&self, rid: u16, pasid: Option<u32>, address: u64, access: Access) -> Option<u64>;
    /// Makes the unit's invalidations fail: a refused command (`false`)
    /// or a wedged queue (`true`); `None` heals it.
    fn break_invalidation(&self, how: Option<bool>);
    /// One transaction of a device that can wait for a page request
    /// (ATS + PRI): completed, waiting, or failed.
    fn device_transact(
        &self,
        rid: u16,
        pasid: Option<u32>,
        address: u64,
        access: Access,
    ) -> DeviceOutcome;
    /// Where transaction `id` stands now.
    fn outcome(&self, id: TransactionId) -> DeviceOutcome;
    /// Turns the device's PCIe PRI capability on or off.
    fn device_page_requests(&self, rid: u16, on: bool);
}

impl Model for SimVtd<'_> {
    fn transact(&self, rid: u16, pasid: Option<u32>, address: u64, access: Access) -> Option<u64> {
        SimVtd::dma(
            self,
            Request {
                source_id: rid,
                pasid,
                address,
                access,
            },
        )
        .ok()
    }
    fn break_invalidation(&self, how: Option<bool>) {
        self.stall_queue.set(how == Some(true));
        // A transient refusal: the one invalidation fails, the blocking
        // that follows goes through.
        self.reject_descriptors
            .set(if how == Some(false) { 1 } else { 0 });
    }
    fn device_transact(
        &self,
        rid: u16,
        pasid: Option<u32>,
        address: u64,
        access: Access,
    ) -> DeviceOutcome {
        self.device_dma(Request {
            source_id: rid,
            pasid,
            address,
            access,
        })
    }
    fn outcome(&self, id: TransactionId) -> DeviceOutcome {
        self.transaction(id)
    }
    fn device_page_requests(&self, rid: u16, on: bool) {
        self.enable_device_page_requests(rid, on);
    }
}

impl Model for SimSmmu<'_> {
    fn transact(&self, rid: u16, pasid: Option<u32>, address: u64, access: Access) -> Option<u64> {
        match SimSmmu::dma(
            self,
            SmmuRequest {
                stream_id: u32::from(rid),
                substream_id: pasid,
                address,
                access,
            },
        ) {
            Outcome::Translated(pa) => Some(pa),
            _ => None,
        }
    }
    fn break_invalidation(&self, how: Option<bool>) {
        self.stall_commands.set(how == Some(true));
        self.reject_opcode.set(if how == Some(false) {
            Some(iommu::smmuv3::queue::opcode::TLBI_S12_VMALL)
        } else {
            None
        });
    }
    fn device_transact(
        &self,
        rid: u16,
        pasid: Option<u32>,
        address: u64,
        access: Access,
    ) -> DeviceOutcome {
        self.device_dma(SmmuRequest {
            stream_id: u32::from(rid),
            substream_id: pasid,
            address,
            access,
        })
    }
    fn outcome(&self, id: TransactionId) -> DeviceOutcome {
        self.transaction(id)
    }
    fn device_page_requests(&self, rid: u16, on: bool) {
        self.enable_device_page_requests(u32::from(rid), on);
    }
}

/// A driver unit whose recorded faults the tests drain.
pub trait Faults {
    fn drain(&mut self, memory: &SimMemory) -> Vec<DmaFault>;
}

impl<R: iommu::Mmio> Faults for VtdUnit<R> {
    fn drain(&mut self, _memory: &SimMemory) -> Vec<DmaFault> {
        self.read_faults()
            .iter()
            .map(|r| DmaFault::from(&r))
            .collect()
    }
}

impl<R: iommu::Mmio> Faults for Smmu<R> {
    fn drain(&mut self, memory: &SimMemory) -> Vec<DmaFault> {
        self.drain_events(memory)
            .events
            .iter()
            .map(|e| DmaFault::from(&e))
            .collect()
    }
}

/// One IoSpace in the capability state.
#[derive(Clone, Debug)]
pub struct SpaceRecord {
    pub did: u16,
    /// IPA -> (physical address, rights) of every IO mapping.
    pub mappings: BTreeMap<u64, (u64, Rights)>,
    /// The root IPA of its nest's stage 1, once built.
    pub stage1: Option<u64>,
}

/// Where a device (or one PASID of it) points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachRecord {
    pub space: ObjectId,
    /// Through the space's stage 1 (nested).
    pub nested: bool,
}

/// How the stage 1 a driver builds is shaped on this unit.
#[derive(Clone, Copy)]
pub struct Stage1Shape<F> {
    pub format: F,
    pub height: u32,
    pub bits: u32,
}

/// The layer, the unit, the model and the capability state.
pub struct World<'m, U: IoUnit, D: Model, F> {
    pub memory: &'m SimMemory,
    pub device: &'m D,
    pub unit: U,
    pub state: Box<State<U, &'m SimMemory, TestEnv>>,
    pub spaces: BTreeMap<ObjectId, SpaceRecord>,
    /// (requester, PASID) -> attachment.
    pub attached: BTreeMap<(u16, Option<u32>), AttachRecord>,
    pub stage1: Stage1Shape<F>,
    /// Each driver stage 1 by root IPA: its table pages (IPA -> PA).
    stage1_pages: BTreeMap<u64, BTreeMap<u64, u64>>,
    next_object: u32,
    next_page: u64,
    next_did: u16,
}

/// QEMU's VT-d in scalable mode with PASIDs (PSS=19).
pub const PASID_ECAP: u64 =
    iommu::model::vtd_device::QEMU_ECAP | 1 << 43 | 1 << 46 | 1 << 31 | 1 << 40 | 19 << 35;

pub type VtdWorld<'m> = World<'m, VtdUnit<&'m SimVtd<'m>>, SimVtd<'m>, FirstStageFormat>;
pub type SmmuWorld<'m> = World<'m, Smmu<&'m SimSmmu<'m>>, SimSmmu<'m>, Stage1Format>;

/// A VT-d unit in `mode` over `device`, DMA blocked, with the pool filled.
pub fn vtd<'m>(memory: &'m SimMemory, device: &'m SimVtd<'m>, mode: RootTableMode) -> VtdWorld<'m> {
    let mut unit = VtdUnit::new(device).with_poll_limit(PollLimit(2000));
    let mut boot = SimFrames::new(memory, BOOT_FRAMES.0, BOOT_FRAMES.1);
    unit.block_all_dma(memory, &mut boot, mode).unwrap();
    let format = FirstStageFormat::for_unit(unit.capability());
    World::new(
        memory,
        device,
        unit,
        Stage1Shape {
            format,
            height: 4,
            bits: 48,
        },
    )
}

/// QEMU's SMMUv3 over `device`, DMA blocked, with the pool filled.
pub fn smmu<'m>(memory: &'m SimMemory, device: &'m SimSmmu<'m>) -> SmmuWorld<'m> {
    let mut unit = Smmu::new(device).with_poll_limit(PollLimit(2000));
    let mut boot = SimFrames::new(memory, BOOT_FRAMES.0, BOOT_FRAMES.1);
    unit.block_all_dma(memory, &mut boot, BlockPolicy::RecordFault, 0..256)
        .unwrap();
    World::new(
        memory,
        device,
        unit,
        Stage1Shape {
            format: Stage1Format,
            height: levels_4k(48),
            bits: 48,
        },
    )
}

/// Stage-1 table pages of one nest: IPA -> PA, reached by the driver at
/// their IPAs (as its CPU mapping would).
struct Stage1View<'a> {
    memory: &'a SimMemory,
    pages: &'a BTreeMap<u64, u64>,
}

impl PhysMem for Stage1View<'_> {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.memory.read_u64(self.pa(addr))
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) {
        self.memory.write_u64(self.pa(addr), value)
    }
}

impl Stage1View<'_> {
    fn pa(&self, ipa: u64) -> u64 {
        self.pages[&(ipa & !0xfff)] + (ipa & 0xfff)
    }
}

/// Hands out the nest's table pages (IPAs) in order.
struct Stage1Frames<'a> {
    view: &'a Stage1View<'a>,
    next: std::vec::IntoIter<u64>,
}

impl FrameAllocator for Stage1Frames<'_> {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        let ipa = self.next.next()?;
        self.view.zero(ipa, 4096);
        Some(ipa)
    }
}

impl<'m, U, D, F> World<'m, U, D, F>
where
    U: IoUnit + Faults,
    D: Model,
    F: PageTableFormat + Copy,
{
    fn new(memory: &'m SimMemory, device: &'m D, unit: U, stage1: Stage1Shape<F>) -> Self {
        let mut state = Box::new(State::new(memory));
        let (added, spaces) = state.add_pool_pages((POOL.0..POOL.1).step_by(4096));
        assert_eq!(added, ((POOL.1 - POOL.0) / 4096) as usize);
        assert!(spaces >= 8, "{spaces} IoSpaces fit the test pool");
        World {
            memory,
            device,
            unit,
            state,
            spaces: BTreeMap::new(),
            attached: BTreeMap::new(),
            stage1,
            stage1_pages: BTreeMap::new(),
            next_object: 1,
            next_page: OBJECTS,
            next_did: 1,
        }
    }

    /// A fresh zeroed page of RAM (object memory or a DMA frame).
    pub fn page(&mut self) -> u64 {
        let page = self.next_page;
        self.next_page += 4096;
        assert!(self.next_page < MEMORY);
        self.memory.zero(page, 4096);
        page
    }

    /// Applies one effect, as the kernel's invocation would.
    pub fn apply(&mut self, effect: Effect) {
        self.state.apply(&mut self.unit, &effect);
    }

    /// `UntypedRetype` of an IoSpace: a fresh object page and DID.
    pub fn create_space(&mut self) -> Result<ObjectId, abi::Error> {
        let object = ObjectId(self.next_object);
        self.next_object += 1;
        self.create_space_as(object)
    }

    /// The same with object id `object` (not one in use).
    pub fn create_space_as(&mut self, object: ObjectId) -> Result<ObjectId, abi::Error> {
        self.state.can_register(&self.unit, 1)?;
        let did = self.next_did;
        self.next_did += 1;
        let root = self.page();
        self.state.register_space(&self.unit, object, root, did)?;
        self.spaces.insert(
            object,
            SpaceRecord {
                did,
                mappings: BTreeMap::new(),
                stage1: None,
            },
        );
        Ok(object)
    }

    /// The model DID of `space`.
    pub fn did(&self, space: ObjectId) -> u16 {
        self.spaces[&space].did
    }

    /// `IoSpace.Map` of a 4 KiB Frame at `pa`, the kernel's way: the
    /// space's record found once for the checks, the leaf written there
    /// ([`World::map_at`]).
    pub fn map(
        &mut self,
        space: ObjectId,
        ipa: u64,
        pa: u64,
        rights: Rights,
    ) -> Result<(), abi::Error> {
        self.state.ensure_pool(space)?;
        let at = self
            .state
            .space_at(space)
            .ok_or(abi::Error::TableMemoryExhausted)?;
        self.map_at(at, space, ipa, pa, rights);
        Ok(())
    }

    /// The leaf of [`World::map`] written through the record `at` found
    /// for `space` (`State::map_through`), and the mapping recorded in the
    /// capability state.
    pub fn map_at(&mut self, at: SpaceAt, space: ObjectId, ipa: u64, pa: u64, rights: Rights) {
        let did = self.did(space);
        self.state.map_through(
            at,
            &Effect::MapIoPage {
                unit: 0,
                did,
                space,
                ipa,
                paddr: pa,
                size_bits: 12,
                rights,
            },
        );
        self.spaces
            .get_mut(&space)
            .unwrap()
            .mappings
            .insert(ipa, (pa, rights));
    }

    /// `IoSpace.Unmap` (or a Frame's delete): the leaf, then the
    /// invalidation waited for. The answer is the invocation's.
    pub fn unmap(&mut self, space: ObjectId, ipa: u64) -> Result<(), abi::Error> {
        self.state.forget_failure();
        let did = self.did(space);
        self.spaces.get_mut(&space).unwrap().mappings.remove(&ipa);
        self.apply(Effect::UnmapIoPage {
            unit: 0,
            did,
            space,
            ipa,
            size_bits: 12,
        });
        self.flush(&[did]);
        self.state.take_failure().map_or(Ok(()), Err)
    }

    fn flush(&mut self, dids: &[u16]) {
        for &did in dids {
            self.apply(Effect::InvalidateDomain { unit: 0, did });
        }
        self.apply(Effect::WaitForInvalidation { unit: 0 });
    }

    /// `IoDevice.Attach` (`pasid` None) or `IoPasid.Attach`, directly or
    /// through the space's stage 1.
    pub fn attach(
        &mut self,
        rid: u16,
        pasid: Option<u32>,
        space: ObjectId,
        nested: bool,
    ) -> Result<(), abi::Error> {
        let stage1_root = if nested {
            Some(self.stage1_of(space)?)
        } else {
            None
        };
        self.attach_at(rid, pasid, space, stage1_root)
    }

    /// The same through the driver's stage 1 at `stage1_root`, if any.
    pub fn attach_at(
        &mut self,
        rid: u16,
        pasid: Option<u32>,
        space: ObjectId,
        stage1_root: Option<u64>,
    ) -> Result<(), abi::Error> {
        let nested = stage1_root.is_some();
        self.state.forget_failure();
        self.state.ensure_attach_room(space, stage1_root)?;
        let did = self.did(space);
        self.apply(match pasid {
            None => Effect::InstallDeviceEntry {
                unit: 0,
                rid: u32::from(rid),
                did,
                space,
                stage1_root,
            },
            Some(pasid) => Effect::InstallPasidEntry {
                unit: 0,
                rid: u32::from(rid),
                pasid,
                did,
                space,
                stage1_root,
            },
        });
        self.state.take_failure().map_or(Ok(()), Err)?;
        self.attached
            .insert((rid, pasid), AttachRecord { space, nested });
        Ok(())
    }

    /// `IoDevice.Detach` / `IoPasid.Detach`.
    pub fn detach(&mut self, rid: u16, pasid: Option<u32>) -> Result<(), abi::Error> {
        self.state.forget_failure();
        let record = self.attached.remove(&(rid, pasid)).expect("attached");
        self.apply(match pasid {
            None => Effect::ClearDeviceEntry {
                unit: 0,
                rid: u32::from(rid),
            },
            Some(pasid) => Effect::ClearPasidEntry {
                unit: 0,
                rid: u32::from(rid),
                pasid,
            },
        });
        let did = self.did(record.space);
        self.flush(&[did]);
        self.state.take_failure().map_or(Ok(()), Err)
    }

    /// Deletes an IoSpace: its devices detached, its mappings removed,
    /// then the kernel's reconcile.
    pub fn delete_space(&mut self, space: ObjectId) -> Result<(), abi::Error> {
        self.state.forget_failure();
        let did = self.did(space);
        let users: Vec<(u16, Option<u32>)> = self
            .attached
            .iter()
            .filter(|(_, a)| a.space == space)
            .map(|(k, _)| *k)
            .collect();
        for (rid, pasid) in users {
            self.attached.remove(&(rid, pasid));
            self.apply(match pasid {
                None => Effect::ClearDeviceEntry {
                    unit: 0,
                    rid: u32::from(rid),
                },
                Some(pasid) => Effect::ClearPasidEntry {
                    unit: 0,
                    rid: u32::from(rid),
                    pasid,
                },
            });
        }
        let record = self.spaces.remove(&space).unwrap();
        for ipa in record.mappings.keys() {
            self.apply(Effect::UnmapIoPage {
                unit: 0,
                did,
                space,
                ipa: *ipa,
                size_bits: 12,
            });
        }
        self.flush(&[did]);
        let live: Vec<ObjectId> = self.spaces.keys().copied().collect();
        self.state.reconcile(
            |object, kind| kind != ObjectKind::IoSpace || live.contains(&object),
            |_| true,
        );
        self.state.take_failure().map_or(Ok(()), Err)
    }

    /// The driver's stage 1 of `space` (built on first use): table pages
    /// mapped into the space at [`STAGE1_IPA`], IOVA `IOVA + i` -> IPA
    /// `DATA_IPA + i` for every data page, read-write.
    pub fn stage1_of(&mut self, space: ObjectId) -> Result<u64, abi::Error> {
        if let Some(root) = self.spaces[&space].stage1 {
            return Ok(root);
        }
        let root = self.another_stage1(space, 0)?;
        self.spaces.get_mut(&space).unwrap().stage1 = Some(root);
        Ok(root)
    }

    /// Stage 1 number `copy` of `space` (0 is [`World::stage1_of`]'s),
    /// the same translations in its own table pages; its root.
    pub fn another_stage1(&mut self, space: ObjectId, copy: u64) -> Result<u64, abi::Error> {
        let mut pages = BTreeMap::new();
        for i in 0..STAGE1_PAGES {
            let ipa = STAGE1_IPA + 4096 * (copy * STAGE1_PAGES + i);
            let pa = self.page();
            self.map(space, ipa, pa, Rights::READ_WRITE)?;
            pages.insert(ipa, pa);
        }
        let view = Stage1View {
            memory: self.memory,
            pages: &pages,
        };
        let ipas: Vec<u64> = pages.keys().copied().collect();
        let mut frames = Stage1Frames {
            view: &view,
            next: ipas.into_iter(),
        };
        let shape = self.stage1;
        let table = PageTable::new(&mut frames, shape.format, shape.height, shape.bits).unwrap();
        for i in 0..DATA_PAGES {
            table
                .map(
                    &view,
                    &mut frames,
                    IOVA + 4096 * i,
                    DATA_IPA + 4096 * i,
                    PageSize::Size4K,
                    Perms::READ_WRITE,
                )
                .unwrap();
        }
        let root = table.root();
        self.stage1_pages.insert(root, pages);
        Ok(root)
    }

    /// The IPAs of the table pages set aside for the driver's stage 1 at
    /// `root`, in the order its tables took them: root, level 3, level 2,
    /// the last-level table of the data pages, then spares.
    pub fn stage1_table_ipas(&self, root: u64) -> Vec<u64> {
        self.stage1_pages[&root].keys().copied().collect()
    }

    /// The driver maps `iova` -> `ipa` (read-write) in its stage 1 at
    /// `root`, in a last-level table the stage 1 already has (IOVAs
    /// within 2 MiB of [`IOVA`]).
    pub fn map_stage1(&mut self, root: u64, iova: u64, ipa: u64) {
        let pages = &self.stage1_pages[&root];
        let view = Stage1View {
            memory: self.memory,
            pages,
        };
        let mut frames = Stage1Frames {
            view: &view,
            next: Vec::new().into_iter(),
        };
        let shape = self.stage1;
        let table = PageTable::at(root, shape.format, shape.height, shape.bits).unwrap();
        table
            .map(
                &view,
                &mut frames,
                iova,
                ipa,
                PageSize::Size4K,
                Perms::READ_WRITE,
            )
            .unwrap();
    }

    /// Turns the unit's page requests on (its queue page from RAM
    /// outside the pool); whether the unit has them.
    pub fn enable_page_requests(&mut self) -> bool {
        let mut frames = SimFrames::new(self.memory, 48 * MIB, 50 * MIB);
        self.state
            .enable_page_requests(&mut self.unit, &mut frames)
            .unwrap()
    }

    /// What the unit recorded and queued (faults and page requests),
    /// delivered at time `now` as the kernel's interrupt does.
    pub fn deliver_at(&mut self, now: u64) -> iospace::Drained<u32> {
        let faults = self.unit.drain(self.memory);
        self.state.deliver(&mut self.unit, &faults, now)
    }

    /// Deletes fault queue `queue`: the kernel's reconcile, then its
    /// pending page requests answered.
    pub fn delete_queue(&mut self, queue: ObjectId) -> usize {
        self.state.reconcile(
            |object, kind| kind != ObjectKind::IoFaultQueue || object != queue,
            |_| true,
        );
        self.state.fail_orphans(&mut self.unit)
    }

    /// `IoUserTable.Invalidate` of the whole stage 1 of `space`, to its end.
    pub fn user_invalidate(&mut self, space: ObjectId) -> Result<(), abi::Error> {
        let Some(root) = self.spaces[&space].stage1 else {
            return Ok(());
        };
        self.user_invalidate_at(space, root)
    }

    /// The same for the driver's stage 1 at `root`.
    pub fn user_invalidate_at(&mut self, space: ObjectId, root: u64) -> Result<(), abi::Error> {
        self.state.forget_failure();
        let (mut start, end) = (IOVA, IOVA + 4096 * DATA_PAGES);
        while start < end {
            let (next, _) = self.state.invalidate_user_table(
                &mut self.unit,
                space,
                root,
                start,
                end - start,
            )?;
            start = next;
        }
        self.state.take_failure().map_or(Ok(()), Err)
    }

    /// Binds fault queue `queue` (notification `notify`, badge `badge`)
    /// to `source`.
    pub fn bind(&mut self, queue: ObjectId, notify: u32, badge: u64, source: FaultSource) {
        self.state
            .bind_queue(queue, notify, badge, || Ok(()))
            .unwrap();
        self.apply(Effect::RouteFaults {
            unit: 0,
            source,
            queue: Some(queue),
        });
    }

    /// What the unit recorded, queued as the kernel's fault interrupt does.
    pub fn deliver(&mut self) -> iospace::Drained<u32> {
        let faults = self.unit.drain(self.memory);
        self.state.queue_faults(&faults)
    }

    /// The address `(rid, pasid)`'s DMA at `address` may reach by the
    /// capability state: through its IoSpace's IO mapping (directly, or
    /// at the IOVA its stage 1 maps to it), with the right for `access`.
    pub fn allowed(
        &self,
        rid: u16,
        pasid: Option<u32>,
        address: u64,
        access: Access,
    ) -> Option<u64> {
        let record = self.attached.get(&(rid, pasid))?;
        let space = &self.spaces[&record.space];
        let ipa = if record.nested {
            let page = address.checked_sub(IOVA)? / 4096;
            if page >= DATA_PAGES {
                return None;
            }
            DATA_IPA + 4096 * page + (address & 0xfff)
        } else {
            address
        };
        let (pa, rights) = space.mappings.get(&(ipa & !0xfff))?;
        let right = match access {
            Access::Read => Rights::READ,
            Access::Write => Rights::WRITE,
        };
        rights.contains(right).then_some(pa + (ipa & 0xfff))
    }

    /// Every DMA the model lets through for these requesters lands
    /// where the capability state allows; `live` also demands that
    /// everything allowed translates (for direct attachments, and for
    /// nests right after their `Invalidate`). Returns the translations
    /// seen.
    pub fn check(&self, requesters: &[(u16, Option<u32>)], live: bool) -> Result<usize, String> {
        let mut seen = 0;
        for &(rid, pasid) in requesters {
            let nested = self.attached.get(&(rid, pasid)).is_some_and(|a| a.nested);
            for i in 0..DATA_PAGES {
                for access in [Access::Read, Access::Write] {
                    let address = if nested { IOVA } else { DATA_IPA } + 4096 * i + 8;
                    let got = self.device.transact(rid, pasid, address, access);
                    let allowed = self.allowed(rid, pasid, address, access);
                    match (got, allowed) {
                        (Some(pa), Some(want)) if pa == want => seen += 1,
                        (Some(pa), _) => {
                            return Err(format!(
                                "{rid:#x} PASID {pasid:?} {access:?} {address:#x} reached {pa:#x}; the capability state allows {allowed:x?}"
                            ));
                        }
                        (None, Some(want)) if live => {
                            return Err(format!(
                                "{rid:#x} PASID {pasid:?} {access:?} {address:#x} faulted; the capability state maps it to {want:#x}"
                            ));
                        }
                        (None, _) => {}
                    }
                }
            }
        }
        Ok(seen)
    }
}
