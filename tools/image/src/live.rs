//! The kernel's live capability derivation tree, as a kernel built with the
//! `cap-dump` feature prints it over serial once init has started every
//! protection domain: parsed out of a whole serial transcript into a
//! [`LiveDump`], drawn the way [`crate::graph`] draws an image
//! ([`draw`]), written as an indented tree ([`tree_text`]) and compared
//! with the image it was booted from ([`check_against`]).
//!
//! The dump, every line starting exactly with `capdump: ` (other serial
//! output may come between whole lines; numbers are decimal unless
//! `0x`-prefixed):
//!
//! ```text
//! capdump: begin [<moment>]
//! capdump: object <id> <Kind> paddr=0x<hex> bits=<n> parent=<untyped id|-> [key=value ...]
//! capdump: cap <slot> depth=<d> object=<id> rights=<RWG> badge=0x<hex> [io=<iospace id>@0x<ipa>:<RWG>] [cpu=0x<vspace root paddr>@0x<vaddr>:<RWG>]
//! capdump: end objects=<n> caps=<n>
//! ```
//!
//! Kind-specific keys on object lines (each optional, `-` for none):
//! Untyped `used= device=`, CNode `slots=<first>+<count>`, Tcb `cspace=
//! vspace= name=`, IrqHandler `line=`, IoDevice `rid= space= table=
//! faults=`, IoSpace `did= faults=`, IoUserTable `space= ipa=`, IoPasid
//! `device= pasid= space= table=`. Unknown keys are ignored.
//!
//! Cap lines come in derivation-tree pre-order: a capability's parent is
//! the nearest earlier cap line one level shallower. Slots below
//! [`KERNEL_SLOTS`] are the kernel's own; every other slot belongs to the
//! CNode whose `slots=` range holds it, and a CNode to the TCB whose
//! `cspace=` names it. A named TCB is a protection domain (`init` is the
//! root task).
//!
//! Parsing is strict where a wrong answer would follow (a bad number, an
//! unknown kind, a cap naming no object, a depth jumping by more than one,
//! a missing `end`, counts that disagree with `end`) and tolerant of extra
//! keys. The kernel names the moment after `begin`: `call` when init asks
//! (every domain built, none run yet: the state the image describes) and
//! `halt` when a thread ends the session with DebugHalt (the final state).
//! [`parse`] returns the first dump of a transcript, [`parse_all`] every
//! complete one and, apart, a last dump the transcript cut short (a run
//! that died or timed out during its `halt` dump still has its `call`
//! dump).

mod check;
mod draw;

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;

pub use check::check_against;
pub use draw::{dot, graph};

use crate::size::human;

/// What starts every dump line.
pub const PREFIX: &str = "capdump: ";
/// Slots below this are held by the kernel itself, not by any CNode.
pub const KERNEL_SLOTS: u64 = 64;
/// The name the root task's TCB carries.
pub const ROOT_TASK: &str = "init";

/// An object's kind: the capability model's own, named as the kernel's
/// `{:?}` prints it.
pub use caps::ObjectKind as Kind;

/// The kind the kernel printed as `word`.
fn parse_kind(word: &str) -> Option<Kind> {
    Kind::ALL
        .into_iter()
        .find(|kind| format!("{kind:?}") == word)
}

/// The rights of a capability or a mapping: read, write, grant (`RWG`,
/// `R--`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rights {
    /// `R`.
    pub read: bool,
    /// `W`.
    pub write: bool,
    /// `G`.
    pub grant: bool,
}

impl Rights {
    fn parse(word: &str) -> Option<Rights> {
        let bytes = word.as_bytes();
        let flag = |index: usize, letter: u8| match bytes.get(index) {
            Some(&b) if b == letter => Some(true),
            Some(b'-') => Some(false),
            _ => None,
        };
        if bytes.len() != 3 {
            return None;
        }
        Some(Rights {
            read: flag(0, b'R')?,
            write: flag(1, b'W')?,
            grant: flag(2, b'G')?,
        })
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = |on: bool, letter: char| if on { letter } else { '-' };
        write!(
            f,
            "{}{}{}",
            letter(self.read, 'R'),
            letter(self.write, 'W'),
            letter(self.grant, 'G')
        )
    }
}

/// What an object line says beyond id, kind, address, size and parent;
/// every field is `None` when its key is absent or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Details {
    /// A kind without specific keys.
    #[default]
    None,
    /// Untyped memory.
    Untyped {
        /// `used=`: bytes retyped so far.
        used: Option<u64>,
        /// `device=`: device memory (1) or RAM (0).
        device: Option<bool>,
    },
    /// A CNode.
    CNode {
        /// `slots=<first>+<count>`: it owns slots `first..first + count`.
        slots: Option<(u64, u64)>,
    },
    /// A thread.
    Tcb {
        /// `cspace=`: its CSpace root CNode.
        cspace: Option<u64>,
        /// `vspace=`: its VSpace root table's physical address.
        vspace: Option<u64>,
        /// `name=`: its protection domain's name (`init` for the root task).
        name: Option<String>,
    },
    /// An interrupt line's handler.
    IrqHandler {
        /// `line=`: the interrupt number.
        line: Option<u64>,
    },
    /// A PCI function.
    IoDevice {
        /// `rid=`: its requester id.
        rid: Option<u64>,
        /// `space=`: the IoSpace it is attached to.
        space: Option<u64>,
        /// `table=`: the IoUserTable (stage 1) it is attached to.
        table: Option<u64>,
        /// `faults=`: the IoFaultQueue it reports to.
        faults: Option<u64>,
    },
    /// A stage-2 translation.
    IoSpace {
        /// `did=`: its domain id.
        did: Option<u64>,
        /// `faults=`: the IoFaultQueue it reports to.
        faults: Option<u64>,
    },
    /// A driver's stage-1 table inside an IoSpace.
    IoUserTable {
        /// `space=`: the IoSpace it lives in.
        space: Option<u64>,
        /// `ipa=`: its address there.
        ipa: Option<u64>,
    },
    /// A PASID of a device.
    IoPasid {
        /// `device=`: the IoDevice.
        device: Option<u64>,
        /// `pasid=`: the PASID.
        pasid: Option<u64>,
        /// `space=`: the IoSpace it is attached to.
        space: Option<u64>,
        /// `table=`: the IoUserTable it is attached to.
        table: Option<u64>,
    },
}

/// One `object` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The kernel's object id.
    pub id: u64,
    /// Its kind.
    pub kind: Kind,
    /// Physical address.
    pub paddr: u64,
    /// log2 of its size in bytes.
    pub bits: u32,
    /// The Untyped it was retyped from (`None` for boot objects).
    pub parent: Option<u64>,
    /// Kind-specific state.
    pub details: Details,
    /// Serial line (from 1) it was read from.
    pub line: usize,
}

impl Object {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        1u64.checked_shl(self.bits).unwrap_or(u64::MAX)
    }
}

/// A Frame capability's CPU mapping: the VSpace (by its root table's
/// physical address), the virtual address and the rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMapping {
    /// The VSpace's root table's physical address.
    pub vspace: u64,
    /// The virtual address.
    pub vaddr: u64,
    /// The mapping's rights.
    pub rights: Rights,
}

/// A Frame capability's DMA mapping: the IoSpace object, the IPA and the rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoMapping {
    /// The IoSpace's object id.
    pub space: u64,
    /// The IPA.
    pub ipa: u64,
    /// The mapping's rights.
    pub rights: Rights,
}

/// Who holds a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    /// The kernel (slots below [`KERNEL_SLOTS`]).
    Kernel,
    /// A protection domain or init: an index into [`LiveDump::domains`].
    Domain(usize),
    /// A CNode no named TCB has as its CSpace (by object id).
    CNode(u64),
    /// A slot in no CNode's range.
    Nowhere,
}

/// One `cap` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// Its slot.
    pub slot: u64,
    /// Depth in the derivation tree (roots are 0).
    pub depth: u32,
    /// The object it names.
    pub object: u64,
    /// Its rights.
    pub rights: Rights,
    /// Its badge (0: none).
    pub badge: u64,
    /// Its DMA mapping, for a Frame mapped into an IoSpace.
    pub io: Option<IoMapping>,
    /// Its CPU mapping, for a Frame mapped into a VSpace.
    pub cpu: Option<CpuMapping>,
    /// Its parent in the derivation tree: an index into [`LiveDump::caps`].
    pub parent: Option<usize>,
    /// Who holds it.
    pub holder: Holder,
    /// Serial line (from 1) it was read from.
    pub line: usize,
}

/// A protection domain (or init): a TCB with a name, its CSpace and VSpace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Its name in the image (`init` for the root task).
    pub name: String,
    /// Its TCB's object id.
    pub tcb: u64,
    /// Its CSpace root CNode's object id.
    pub cnode: Option<u64>,
    /// Its VSpace root table's physical address.
    pub vspace: Option<u64>,
}

/// A parsed dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDump {
    /// Every object, in dump order.
    pub objects: Vec<Object>,
    /// Every capability, in derivation-tree pre-order.
    pub caps: Vec<Capability>,
    /// The named TCBs, in dump order.
    pub domains: Vec<Domain>,
    /// Serial line of `capdump: begin`.
    pub begin_line: usize,
    /// The word after `begin` (`call`, `halt`), empty when there is none.
    pub moment: String,
    by_id: HashMap<u64, usize>,
}

impl LiveDump {
    /// The object with id `id`.
    pub fn object(&self, id: u64) -> Option<&Object> {
        self.objects.get(*self.by_id.get(&id)?)
    }

    /// The index of the domain named `name`.
    pub fn domain(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|domain| domain.name == name)
    }

    /// The domain whose VSpace root is at `vspace`.
    pub fn domain_of_vspace(&self, vspace: u64) -> Option<usize> {
        self.domains
            .iter()
            .position(|domain| domain.vspace == Some(vspace))
    }

    /// A holder as a person reads it: the domain's name, `kernel`,
    /// `CNode #id` or `nowhere`.
    pub fn holder_name(&self, holder: Holder) -> String {
        match holder {
            Holder::Kernel => "kernel".to_string(),
            Holder::Domain(index) => self.domains[index].name.clone(),
            Holder::CNode(id) => format!("CNode #{id}"),
            Holder::Nowhere => "nowhere".to_string(),
        }
    }

    /// The capabilities `holder` holds, with the objects they name.
    pub fn held_by(&self, holder: Holder) -> impl Iterator<Item = (&Capability, &Object)> + '_ {
        self.caps
            .iter()
            .filter(move |cap| cap.holder == holder)
            .filter_map(|cap| Some((cap, self.object(cap.object)?)))
    }

    /// How many capabilities the kernel itself holds.
    pub fn kernel_caps(&self) -> usize {
        self.caps
            .iter()
            .filter(|cap| cap.holder == Holder::Kernel)
            .count()
    }
}

/// Why a transcript holds no usable dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveError {
    /// No `capdump: begin` line at all.
    NoDump,
    /// `begin` without `end`.
    Truncated {
        /// The word after `begin` (`call`, `halt`), empty when there is none.
        moment: String,
        /// Serial line of the `begin`.
        begin_line: usize,
        /// Object lines read before the transcript ended.
        objects: usize,
        /// Cap lines read before the transcript ended.
        caps: usize,
    },
    /// A dump line that does not follow the format.
    Malformed {
        /// Serial line (from 1).
        line: usize,
        /// The line as it was read.
        text: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveError::NoDump => write!(
                f,
                "no `{}begin` line on the serial console; fix: boot a kernel built with the cap-dump feature \
                 (cargo xtask run --cap-dump does) and let init start every protection domain",
                PREFIX
            ),
            LiveError::Truncated {
                moment,
                begin_line,
                objects,
                caps,
            } => {
                let begin = format!("{PREFIX}begin {moment}");
                write!(
                    f,
                    "dump truncated: `{}` at serial line {begin_line}, then {objects} object and {caps} cap lines but no `{PREFIX}end`; \
                     fix: let the guest run until it prints the end line (a timeout or a kernel panic cut it short)",
                    begin.trim_end()
                )
            }
            LiveError::Malformed {
                line,
                text,
                problem,
            } => write!(
                f,
                "serial line {line}: `{text}`: {problem}; fix: make the kernel's cap-dump print the format in tools/image/src/live.rs"
            ),
        }
    }
}

impl std::error::Error for LiveError {}

/// Parses the first dump in a serial transcript.
pub fn parse(transcript: &str) -> Result<LiveDump, LiveError> {
    parse_lines(transcript.lines())
}

/// Parses the first dump in a transcript given line by line: an error when
/// it is truncated or any dump line is malformed (a later dump cut short
/// does not matter here; [`parse_all`] reports it).
pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<LiveDump, LiveError> {
    let Dumps {
        complete,
        truncated,
    } = parse_all(lines)?;
    match (complete.into_iter().next(), truncated) {
        (Some(first), _) => Ok(first),
        (None, Some(error)) => Err(error),
        (None, None) => Err(LiveError::NoDump),
    }
}

/// Every dump of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumps {
    /// The complete dumps, in order.
    pub complete: Vec<LiveDump>,
    /// The last dump, when the transcript ends before its `end`: always a
    /// [`LiveError::Truncated`], which names its moment.
    pub truncated: Option<LiveError>,
}

/// Parses every dump in a transcript given line by line, in order: the
/// complete ones, and apart a last one the transcript cut short. An error
/// when there is no `begin` at all or a dump line is malformed (whichever
/// dump it is in: the kernel and this parser disagree).
pub fn parse_all<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Dumps, LiveError> {
    let mut open: Option<Reading> = None;
    let mut dumps = Vec::new();
    for (index, raw) in lines.into_iter().enumerate() {
        let number = index + 1;
        let text = raw.trim_end_matches(['\r', '\n']);
        let Some(rest) = text.strip_prefix(PREFIX) else {
            continue;
        };
        let malformed = |problem: String| LiveError::Malformed {
            line: number,
            text: text.to_string(),
            problem,
        };
        let mut words = rest.split_whitespace();
        let record = words.next().unwrap_or_default();
        match (record, open.as_mut()) {
            ("begin", None) => {
                open = Some(Reading {
                    moment: words.next().unwrap_or_default().to_string(),
                    begin_line: number,
                    objects: Vec::new(),
                    caps: Vec::new(),
                    texts: HashMap::new(),
                })
            }
            ("begin", Some(reading)) => {
                return Err(malformed(format!(
                    "a second `begin` before the `end` of the dump begun at line {}",
                    reading.begin_line
                )));
            }
            ("object", Some(reading)) => {
                let object = object_line(words, number).map_err(malformed)?;
                reading.objects.push(object);
                reading.texts.insert(number, text.to_string());
            }
            ("cap", Some(reading)) => {
                let cap = cap_line(words, number).map_err(malformed)?;
                reading.caps.push(cap);
                reading.texts.insert(number, text.to_string());
            }
            ("end", Some(_)) => {
                let reading = open.take().unwrap_or_else(|| unreachable!("matched Some"));
                let keys = Keys::parse(words).map_err(malformed)?;
                dumps.push(reading.finish(&keys, number, text)?);
            }
            ("object" | "cap" | "end", None) => {
                return Err(malformed(format!(
                    "a `{record}` line outside `begin` ... `end`"
                )));
            }
            (other, _) => {
                return Err(malformed(format!(
                    "unknown record `{other}` (expected begin, object, cap or end)"
                )));
            }
        }
    }
    let truncated = open.map(|reading| LiveError::Truncated {
        moment: reading.moment,
        begin_line: reading.begin_line,
        objects: reading.objects.len(),
        caps: reading.caps.len(),
    });
    if dumps.is_empty() && truncated.is_none() {
        return Err(LiveError::NoDump);
    }
    Ok(Dumps {
        complete: dumps,
        truncated,
    })
}

/// A dump between `begin` and `end`.
struct Reading {
    moment: String,
    begin_line: usize,
    objects: Vec<Object>,
    caps: Vec<Capability>,
    /// The text of each object and cap line, by line number, for errors.
    texts: HashMap<usize, String>,
}

impl Reading {
    /// Checks the counts and references and computes parents and holders.
    fn finish(self, end: &Keys<'_>, line: usize, text: &str) -> Result<LiveDump, LiveError> {
        let at = |line: usize, text: &str, problem: String| LiveError::Malformed {
            line,
            text: text.to_string(),
            problem,
        };
        let expected_objects = end.number("objects").map_err(|p| at(line, text, p))?;
        let expected_caps = end.number("caps").map_err(|p| at(line, text, p))?;
        if expected_objects != self.objects.len() as u64 || expected_caps != self.caps.len() as u64
        {
            return Err(at(
                line,
                text,
                format!(
                    "the end line counts {expected_objects} objects and {expected_caps} caps, but {} object and {} cap lines came since line {} (lines lost on the serial console?)",
                    self.objects.len(),
                    self.caps.len(),
                    self.begin_line
                ),
            ));
        }
        let Reading {
            moment,
            begin_line,
            objects,
            mut caps,
            texts,
        } = self;
        let line_text = |line: usize| texts.get(&line).cloned().unwrap_or_default();
        let mut by_id = HashMap::new();
        for (index, object) in objects.iter().enumerate() {
            if let Some(first) = by_id.insert(object.id, index) {
                return Err(at(
                    object.line,
                    &line_text(object.line),
                    format!(
                        "object {} is listed twice (first at line {})",
                        object.id, objects[first].line
                    ),
                ));
            }
        }
        // Domains: the named TCBs.
        let mut domains: Vec<Domain> = Vec::new();
        for object in &objects {
            if let Details::Tcb {
                cspace,
                vspace,
                name: Some(name),
            } = &object.details
            {
                if let Some(cnode) = cspace
                    && !by_id.contains_key(cnode)
                {
                    return Err(at(
                        object.line,
                        &line_text(object.line),
                        format!(
                            "Tcb {} names CSpace {cnode}, which has no object line",
                            object.id
                        ),
                    ));
                }
                domains.push(Domain {
                    name: name.clone(),
                    tcb: object.id,
                    cnode: *cspace,
                    vspace: *vspace,
                });
            }
        }
        // Slot ranges of the CNodes, sorted, for the holders.
        let mut ranges: Vec<(u64, u64, u64, usize)> = objects
            .iter()
            .filter_map(|object| match object.details {
                Details::CNode {
                    slots: Some((first, count)),
                } => Some((first, first.saturating_add(count), object.id, object.line)),
                _ => None,
            })
            .collect();
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(at(
                    pair[1].3,
                    &line_text(pair[1].3),
                    format!(
                        "CNode {}'s slots overlap those of CNode {}",
                        pair[1].2, pair[0].2
                    ),
                ));
            }
        }
        let holder_of = |slot: u64| -> Holder {
            if slot < KERNEL_SLOTS {
                return Holder::Kernel;
            }
            let after = ranges.partition_point(|range| range.0 <= slot);
            match after.checked_sub(1).map(|index| ranges[index]) {
                Some((_, end, cnode, _)) if slot < end => domains
                    .iter()
                    .position(|domain| domain.cnode == Some(cnode))
                    .map_or(Holder::CNode(cnode), Holder::Domain),
                _ => Holder::Nowhere,
            }
        };
        // Parents from the depths, holders from the slots.
        let mut stack: Vec<usize> = Vec::new();
        for (index, cap) in caps.iter_mut().enumerate() {
            if !by_id.contains_key(&cap.object) {
                return Err(at(
                    cap.line,
                    &line_text(cap.line),
                    format!(
                        "slot {} names object {}, which has no object line",
                        cap.slot, cap.object
                    ),
                ));
            }
            let depth = cap.depth as usize;
            if depth > stack.len() {
                return Err(at(
                    cap.line,
                    &line_text(cap.line),
                    format!(
                        "slot {} is at depth {depth}, more than one below the previous capability (depth {})",
                        cap.slot,
                        stack.len().saturating_sub(1)
                    ),
                ));
            }
            stack.truncate(depth);
            cap.parent = stack.last().copied();
            cap.holder = holder_of(cap.slot);
            stack.push(index);
        }
        Ok(LiveDump {
            objects,
            caps,
            domains,
            begin_line,
            moment,
            by_id,
        })
    }
}

/// The `key=value` words of a line.
struct Keys<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Keys<'a> {
    fn parse(words: impl Iterator<Item = &'a str>) -> Result<Keys<'a>, String> {
        let mut pairs = Vec::new();
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!("`{word}` is not a key=value pair"));
            };
            pairs.push((key, value));
        }
        Ok(Keys { pairs })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn required(&self, key: &str) -> Result<&'a str, String> {
        self.get(key).ok_or_else(|| format!("`{key}=` is missing"))
    }

    fn number(&self, key: &str) -> Result<u64, String> {
        let value = self.required(key)?;
        number(value).ok_or_else(|| format!("{key}={value} is not a number"))
    }

    /// An optional key whose value is an object id or `-`.
    fn id(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None | Some("-") => Ok(None),
            Some(value) => number(value)
                .map(Some)
                .ok_or_else(|| format!("{key}={value} is neither a number nor `-`")),
        }
    }
}

/// A decimal number, or hexadecimal with `0x`.
fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn object_line<'a>(
    mut words: impl Iterator<Item = &'a str>,
    line: usize,
) -> Result<Object, String> {
    let id_word = words.next().ok_or("the object id is missing")?;
    let id = number(id_word).ok_or_else(|| format!("object id `{id_word}` is not a number"))?;
    let kind_word = words.next().ok_or("the kind is missing")?;
    let kind = parse_kind(kind_word).ok_or_else(|| {
        format!(
            "unknown kind `{kind_word}` (one of {})",
            Kind::ALL.map(|kind| format!("{kind:?}")).join(" ")
        )
    })?;
    let keys = Keys::parse(words)?;
    let bits = keys.number("bits")?;
    let bits = u32::try_from(bits)
        .ok()
        .filter(|&bits| bits < 64)
        .ok_or_else(|| format!("bits={bits} is not below 64"))?;
    let details = match kind {
        Kind::Untyped => Details::Untyped {
            used: keys.id("used")?,
            device: match keys.get("device") {
                None => None,
                Some("0") => Some(false),
                Some("1") => Some(true),
                Some(other) => return Err(format!("device={other} is neither 0 nor 1")),
            },
        },
        Kind::CNode => Details::CNode {
            slots: match keys.get("slots") {
                None | Some("-") => None,
                Some(value) => Some(
                    value
                        .split_once('+')
                        .and_then(|(first, count)| Some((number(first)?, number(count)?)))
                        .ok_or_else(|| format!("slots={value} is not <first>+<count>"))?,
                ),
            },
        },
        Kind::Tcb => Details::Tcb {
            cspace: keys.id("cspace")?,
            vspace: keys.id("vspace")?,
            name: match keys.get("name") {
                None | Some("-") => None,
                Some(name) => Some(name.to_string()),
            },
        },
        Kind::IrqHandler => Details::IrqHandler {
            line: keys.id("line")?,
        },
        Kind::IoDevice => Details::IoDevice {
            rid: keys.id("rid")?,
            space: keys.id("space")?,
            table: keys.id("table")?,
            faults: keys.id("faults")?,
        },
        Kind::IoSpace => Details::IoSpace {
            did: keys.id("did")?,
            faults: keys.id("faults")?,
        },
        Kind::IoUserTable => Details::IoUserTable {
            space: keys.id("space")?,
            ipa: keys.id("ipa")?,
        },
        Kind::IoPasid => Details::IoPasid {
            device: keys.id("device")?,
            pasid: keys.id("pasid")?,
            space: keys.id("space")?,
            table: keys.id("table")?,
        },
        _ => Details::None,
    };
    Ok(Object {
        id,
        kind,
        paddr: keys.number("paddr")?,
        bits,
        parent: match keys.required("parent")? {
            "-" => None,
            value => Some(number(value).ok_or_else(|| format!("parent={value} is not a number"))?),
        },
        details,
        line,
    })
}

/// `<target>@0x<address>:<RWG>`.
fn mapping(key: &str, value: &str) -> Result<(u64, u64, Rights), String> {
    let bad = || format!("{key}={value} is not <target>@0x<address>:<RWG>");
    let (target, rest) = value.split_once('@').ok_or_else(bad)?;
    let (address, rights) = rest.split_once(':').ok_or_else(bad)?;
    Ok((
        number(target).ok_or_else(bad)?,
        number(address).ok_or_else(bad)?,
        Rights::parse(rights).ok_or_else(bad)?,
    ))
}

fn cap_line<'a>(
    mut words: impl Iterator<Item = &'a str>,
    line: usize,
) -> Result<Capability, String> {
    let slot_word = words.next().ok_or("the slot is missing")?;
    let slot = number(slot_word).ok_or_else(|| format!("slot `{slot_word}` is not a number"))?;
    let keys = Keys::parse(words)?;
    let depth = keys.number("depth")?;
    let rights_word = keys.required("rights")?;
    let rights = Rights::parse(rights_word)
        .ok_or_else(|| format!("rights={rights_word} is not three of R/-, W/-, G/-"))?;
    let io = match keys.get("io") {
        None => None,
        Some(value) => {
            let (space, ipa, rights) = mapping("io", value)?;
            Some(IoMapping { space, ipa, rights })
        }
    };
    let cpu = match keys.get("cpu") {
        None => None,
        Some(value) => {
            let (vspace, vaddr, rights) = mapping("cpu", value)?;
            Some(CpuMapping {
                vspace,
                vaddr,
                rights,
            })
        }
    };
    Ok(Capability {
        slot,
        depth: u32::try_from(depth).map_err(|_| format!("depth={depth} is too deep"))?,
        object: keys.number("object")?,
        rights,
        badge: keys.number("badge")?,
        io,
        cpu,
        parent: None,
        holder: Holder::Nowhere,
        line,
    })
}

/// The derivation tree as text, one capability a line, indented two
/// spaces per level: holder, kind, object id, rights, badge, mappings and
/// slot, e.g. `  edu_driver: Frame #41 RW- cpu edu_driver@0x40000000 RW- (slot 1100)`.
pub fn tree_text(dump: &LiveDump, title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {title}");
    let _ = writeln!(
        out,
        "# {} objects, {} capabilities ({} held by the kernel), from serial line {}",
        dump.objects.len(),
        dump.caps.len(),
        dump.kernel_caps(),
        dump.begin_line
    );
    let _ = writeln!(
        out,
        "# one capability a line, indented by derivation depth: holder: Kind #object rights [badge] [cpu VSPACE@vaddr rights] [io IoSpace #id@ipa rights] (slot)"
    );
    for cap in &dump.caps {
        let indent = "  ".repeat(cap.depth as usize);
        let holder = dump.holder_name(cap.holder);
        let kind = dump
            .object(cap.object)
            .map_or_else(|| "?".to_string(), |object| format!("{:?}", object.kind));
        let _ = write!(
            out,
            "{indent}{holder}: {kind} #{} {}",
            cap.object, cap.rights
        );
        if cap.badge != 0 {
            let _ = write!(out, " badge {:#x}", cap.badge);
        }
        if let Some(cpu) = cap.cpu {
            let space = dump.domain_of_vspace(cpu.vspace).map_or_else(
                || format!("{:#x}", cpu.vspace),
                |d| dump.domains[d].name.clone(),
            );
            let _ = write!(out, " cpu {space}@{:#x} {}", cpu.vaddr, cpu.rights);
        }
        if let Some(io) = cap.io {
            let _ = write!(out, " io IoSpace #{}@{:#x} {}", io.space, io.ipa, io.rights);
        }
        if let Some(object) = dump.object(cap.object)
            && matches!(object.kind, Kind::Untyped | Kind::Frame)
        {
            let _ = write!(out, " {} at {:#x}", human(object.size()), object.paddr);
        }
        let _ = writeln!(out, " (slot {})", cap.slot);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
