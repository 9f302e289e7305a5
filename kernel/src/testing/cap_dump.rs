//! The live capability dump (`DebugCapDump`, feature `cap-dump`): every
//! live object and the whole derivation tree, one line each, on the console.
//!
//! `cargo xtask run --cap-dump` parses these lines and draws them the way
//! `cargo xtask graph` draws an image (`tools/image/src/live.rs`), so the
//! format is an interface; change both together.
//!
//! ```text
//! capdump: begin <call|halt>
//! capdump: object <id> <Kind> paddr=0x<hex> bits=<n> parent=<id|-> [<key>=<value> ...]
//! capdump: cap <slot> depth=<d> object=<id> rights=<RWG> badge=0x<hex> [io=<space>@0x<ipa>:<RWG>] [cpu=0x<vspace>@0x<vaddr>:<RWG>]
//! capdump: end objects=<n> caps=<n>
//! ```
//!
//! Kind-specific object keys: Untyped `used= device=`, CNode
//! `slots=<first>+<count>`, Tcb `cspace=<CNode id> vspace=0x<root> name=`,
//! IrqHandler `line=`, IoDevice `rid= space= table= faults=`, IoSpace
//! `did= faults=`, IoUserTable `space= ipa=`, IoPasid `device= pasid=
//! space= table=`; `-` stands for none. A thread name's characters outside
//! `[A-Za-z0-9_.-]` print as `_`. Capabilities come in derivation
//! pre-order ([`caps::Caps::derivation_order`]): a capability's parent is
//! the nearest line before it with depth one less. Slots below the arena
//! are kernel-held; the rest belong to the CNode whose range holds them.
//!
//! A dump is printed when a thread asks for one (`call`: init does, once
//! every domain is built and before any runs) and when a thread ends the
//! session with `DebugHalt` (`halt`: the final state). The dump holds the
//! capability lock throughout, so it is one consistent
//! snapshot; it prints with interrupts off and is for debugging only.

use core::fmt::{self, Display, Write as _};

use caps::{Attachment, ObjectId, ObjectKind, ObjectState};

use crate::objects::CAPS;

/// An optional object id: the id, or `-`.
struct Maybe(Option<ObjectId>);

impl Display for Maybe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{}", id.0),
            None => f.write_str("-"),
        }
    }
}

/// `space= table=` of an attachment.
struct Attached(Option<Attachment>);

impl Display for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let space = self.0.map(|a| a.space);
        let table = self.0.and_then(|a| a.user_table);
        write!(f, "space={} table={}", Maybe(space), Maybe(table))
    }
}

/// Why a dump is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// A thread called `DebugCapDump`.
    Call,
    /// A thread called `DebugHalt`: the state the session ends in.
    Halt,
}

/// Prints the dump (see the module documentation); `threads` lends it
/// each thread's state.
pub fn dump(threads: &mut crate::sched::Threads, moment: Moment) {
    let moment = match moment {
        Moment::Call => "call",
        Moment::Halt => "halt",
    };
    crate::println!("capdump: begin {moment}");
    let Some(caps) = CAPS.get() else {
        crate::println!("capdump: end objects=0 caps=0");
        return;
    };
    let caps = caps.lock();
    let mut objects = 0usize;
    for (index, object) in caps.objects().iter().enumerate() {
        let Some(object) = object else { continue };
        objects += 1;
        let (paddr, bits) = object.memory().unwrap_or((0, 0));
        crate::print!(
            "capdump: object {index} {:?} paddr={paddr:#x} bits={bits} parent={}",
            object.kind(),
            Maybe(object.parent())
        );
        match *object.state() {
            ObjectState::Untyped { watermark, device } => {
                crate::print!(" used={watermark} device={}", u8::from(device));
            }
            ObjectState::CNode {
                first_slot,
                size_bits,
            } => crate::print!(" slots={}+{}", first_slot.0, 1u64 << size_bits),
            ObjectState::IrqHandler { irq } => crate::print!(" line={irq}"),
            ObjectState::IoDevice {
                rid,
                attached,
                fault_queue,
                ..
            } => crate::print!(
                " rid={rid:#x} {} faults={}",
                Attached(attached),
                Maybe(fault_queue)
            ),
            ObjectState::IoSpace {
                did, fault_queue, ..
            } => crate::print!(" did={did} faults={}", Maybe(fault_queue)),
            ObjectState::IoUserTable { space, root_ipa } => {
                crate::print!(" space={} ipa={root_ipa:#x}", Maybe(space));
            }
            ObjectState::IoPasid {
                device,
                pasid,
                attached,
            } => crate::print!(
                " device={} pasid={pasid} {}",
                Maybe(device),
                Attached(attached)
            ),
            ObjectState::Plain | ObjectState::IommuControl(_) | ObjectState::IrqControl { .. } => {}
        }
        if object.kind() == ObjectKind::Tcb {
            let cnode = crate::objects::thread_context(threads.tcb(paddr))
                .and_then(|(cspace, _)| caps.lookup(cspace).ok())
                .map(|cap| cap.object());
            let name = crate::sched::name(threads, paddr);
            crate::print!(
                " cspace={} vspace={:#x} name={}",
                Maybe(cnode),
                crate::sched::vspace_of(threads, paddr),
                Token(name.as_deref().unwrap_or("-"))
            );
        }
        crate::println!();
    }
    let mut count = 0usize;
    for (slot, depth, cap) in caps.derivation_order() {
        count += 1;
        crate::print!(
            "capdump: cap {} depth={depth} object={} rights={:?} badge={:#x}",
            slot.0,
            cap.object().0,
            cap.rights(),
            cap.badge().0
        );
        if let Some(io) = cap.mapping() {
            crate::print!(" io={}@{:#x}:{:?}", io.space.0, io.ipa, io.rights);
        }
        if let Some(cpu) = cap.cpu_mapping() {
            crate::print!(" cpu={:#x}@{:#x}:{:?}", cpu.vspace, cpu.vaddr, cpu.rights);
        }
        crate::println!();
    }
    crate::println!("capdump: end objects={objects} caps={count}");
}

/// `name` with every character outside `[A-Za-z0-9_.-]` written as `_`,
/// so it stays one token.
struct Token<'a>(&'a str);

impl Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            let plain = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
            f.write_char(if plain { c } else { '_' })?;
        }
        Ok(())
    }
}
