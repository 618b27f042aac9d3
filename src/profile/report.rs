//! From the live samples to what users read: symbolization (`backtrace`), aggregation by stack,
//! the folded-stacks text, the pprof protobuf (`prost`, gzip'd with `flate2`) and the leak
//! report. Everything here runs inside the profiler's guard (its allocations go to the system
//! allocator and are never sampled), on a snapshot of the table taken without allocating under
//! its lock.

use super::pprof;
use super::sampler;
use super::table::{self, Record};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

/// A place in the program that allocated memory still live, with the estimate of how much.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Site {
    /// The allocating function, demangled (its address in hex when no symbol is known): the
    /// innermost frame outside the allocator and the standard library's allocation machinery
    /// (`Box::new`, `Rc::new`, `Vec` growth, ...).
    pub function: String,
    /// Its source file, when debug information says.
    pub file: Option<PathBuf>,
    /// The line of the allocating call, when debug information says.
    pub line: Option<u32>,
    /// Estimated live bytes allocated here.
    pub bytes: u64,
    /// Estimated live blocks allocated here.
    pub blocks: u64,
    /// Live samples behind the estimate (the fewer, the rougher).
    pub samples: usize,
    /// The callers of `function`, innermost first (at most 8).
    pub callers: Vec<String>,
}


/// One function a return address lies in (several for inlined calls).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// Demangled, without the hash suffix (or the address in hex when unknown).
    pub(crate) name: String,
    /// The symbol as the object file names it (mangled), empty when unknown.
    pub(crate) system_name: String,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

/// Live samples from one stack, scaled.
pub(crate) struct Stack {
    /// Return addresses, innermost first.
    pub(crate) ips: Vec<usize>,
    /// Estimated live blocks.
    pub(crate) blocks: f64,
    /// Estimated live bytes.
    pub(crate) bytes: f64,
    /// Samples behind the estimate.
    pub(crate) samples: usize,
}

/// The live samples, aggregated and symbolized.
pub(crate) struct Snapshot {
    pub(crate) stacks: Vec<Stack>,
    symbols: HashMap<usize, Vec<Frame>>,
    /// Live samples in the table.
    pub(crate) live: usize,
    /// Samples lost because the table was full.
    pub(crate) dropped: usize,
    /// The mean sampling interval of the running (or last) profile, in bytes.
    pub(crate) rate: usize,
}

/// Frames of the allocator and of the profiler itself, cut from the innermost end of every stack.
const INTERNAL: &[&str] = &[
    "smallarena::",
    "<smallarena::",
    "smallarena_preload::",
    "backtrace::",
    "<backtrace::",
    "__rust_alloc",
    "__rust_realloc",
    "__rust_dealloc",
    "__rdl_",
    "__rg_",
    "_Unwind_",
];
/// C entry points of the preload (whole names).
const INTERNAL_C: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "malloc_crossed",
];
/// Standard-library allocation machinery (`Box::new`, `Rc::new`, `Vec` growth, ...), also cut
/// before naming the site of an allocation in the leak report.
const MACHINERY: &[&str] = &[
    "alloc::",
    "<alloc::",
    "core::",
    "<core::",
    "std::",
    "<std::",
    "hashbrown::",
    "<hashbrown::",
    // C and C++ helpers that allocate for their caller.
    "operator new",
    "strdup",
    "__strdup",
    "__GI___strdup",
    "strndup",
    "__strndup",
];

/// The C runtime's frames around `main` (and an unresolved outermost frame): with the machinery,
/// what a stack of the runtime alone is made of.
const RUNTIME: &[&str] = &[
    "main",
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "0x0",
];

fn is_internal(name: &str) -> bool {
    INTERNAL.iter().any(|p| name.starts_with(p)) || INTERNAL_C.contains(&name)
}

fn is_machinery(name: &str) -> bool {
    MACHINERY.iter().any(|p| name.starts_with(p))
}

impl Snapshot {
    /// Takes the live samples now and symbolizes them. Call inside the guard.
    pub(crate) fn take() -> Snapshot {
        let (live, dropped) = table::counts();
        // Room for samples taken meanwhile; nothing is allocated under the table's lock.
        let mut records: Vec<Record> = Vec::with_capacity(live + live / 4 + 16);
        let live = table::snapshot(&mut records);
        let mut by_stack: HashMap<&[usize], Stack> = HashMap::new();
        for r in &records {
            let scale = r.scale();
            let e = by_stack.entry(r.stack()).or_insert_with(|| Stack {
                ips: r.stack().to_vec(),
                blocks: 0.0,
                bytes: 0.0,
                samples: 0,
            });
            e.blocks += scale;
            e.bytes += scale * r.size as f64;
            e.samples += 1;
        }
        let mut stacks: Vec<Stack> = by_stack.into_values().collect();
        stacks.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
        let mut symbols: HashMap<usize, Vec<Frame>> = HashMap::new();
        for s in &stacks {
            for &ip in &s.ips {
                symbols.entry(ip).or_insert_with(|| resolve(ip));
            }
        }
        Snapshot {
            stacks,
            symbols,
            live,
            dropped,
            rate: sampler::RATE.load(crate::sync::Ordering::Relaxed),
        }
    }

    /// The return addresses of `stack`, innermost first, without those of the allocator and the
    /// profiler (everything up to the outermost address that lies in one of their functions).
    pub(crate) fn kept_ips<'s>(&self, stack: &'s Stack) -> &'s [usize] {
        let cut = stack
            .ips
            .iter()
            .rposition(|ip| {
                self.symbols
                    .get(ip)
                    .is_some_and(|fs| fs.iter().any(|f| is_internal(&f.name)))
            })
            .map_or(0, |i| i + 1);
        stack.ips.get(cut..).unwrap_or(&[])
    }

    /// The frames of `stack`'s [kept addresses](Self::kept_ips), innermost first, inlined
    /// functions expanded.
    pub(crate) fn frames<'a>(&'a self, stack: &Stack) -> Vec<&'a Frame> {
        self.kept_ips(stack)
            .iter()
            .filter_map(|ip| self.symbols.get(ip))
            .flatten()
            .collect()
    }

    /// Total estimated live bytes and blocks.
    pub(crate) fn totals(&self) -> (f64, f64) {
        self.stacks
            .iter()
            .fold((0.0, 0.0), |(b, n), s| (b + s.bytes, n + s.blocks))
    }

    /// The folded-stacks text: one line per stack, `outermost;...;innermost BYTES`, estimated live
    /// bytes rounded, biggest first.
    pub(crate) fn folded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.stacks {
            let frames = self.frames(s);
            if frames.is_empty() {
                continue;
            }
            for (i, f) in frames.iter().rev().enumerate() {
                if i > 0 {
                    out.push(b';');
                }
                // `;` separates frames and a line ends in a space and the value: keep names free
                // of both separators' meanings (spaces are allowed, the value follows the last).
                out.extend(f.name.replace(';', ":").replace('\n', " ").bytes());
            }
            let _ = writeln!(out, " {}", s.bytes.round() as u64);
        }
        out
    }

    /// The pprof profile, encoded and gzip-compressed.
    pub(crate) fn pprof_gz(&self) -> std::io::Result<Vec<u8>> {
        use prost::Message;
        let profile = self.pprof();
        let raw = profile.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw)?;
        gz.finish()
    }

    /// The pprof profile: sample types `inuse_objects` (count) and `inuse_space` (bytes), one
    /// sample per stack, one location per return address (its inlined functions as lines).
    pub(crate) fn pprof(&self) -> pprof::Profile {
        let mut strings = Strings::default();
        let mut p = pprof::Profile {
            sample_type: vec![
                pprof::ValueType {
                    r#type: strings.id("inuse_objects"),
                    unit: strings.id("count"),
                },
                pprof::ValueType {
                    r#type: strings.id("inuse_space"),
                    unit: strings.id("bytes"),
                },
            ],
            period_type: Some(pprof::ValueType {
                r#type: strings.id("space"),
                unit: strings.id("bytes"),
            }),
            period: self.rate as i64,
            default_sample_type: strings.id("inuse_space"),
            time_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
            ..Default::default()
        };
        p.comment
            .push(strings.id("smallarena heap profile: live sampled allocations, scaled"));
        let mut locations: HashMap<usize, u64> = HashMap::new();
        let mut functions: HashMap<(String, Option<String>), u64> = HashMap::new();
        for s in &self.stacks {
            let mut ids = Vec::new();
            for &ip in self.kept_ips(s) {
                let frames = self.symbols.get(&ip).map_or(&[][..], Vec::as_slice);
                let next = locations.len() as u64 + 1;
                let id = *locations.entry(ip).or_insert_with(|| {
                    let lines = frames
                        .iter()
                        .map(|f| {
                            let key = (f.name.clone(), f.file.clone());
                            let nf = functions.len() as u64 + 1;
                            let function_id = *functions.entry(key).or_insert_with(|| {
                                p.function.push(pprof::Function {
                                    id: nf,
                                    name: strings.id(&f.name),
                                    system_name: strings.id(&f.system_name),
                                    filename: strings.id(f.file.as_deref().unwrap_or("")),
                                    start_line: 0,
                                });
                                nf
                            });
                            pprof::Line {
                                function_id,
                                line: f.line.map_or(0, i64::from),
                            }
                        })
                        .collect();
                    p.location.push(pprof::Location {
                        id: next,
                        mapping_id: 0,
                        address: ip as u64,
                        line: lines,
                    });
                    next
                });
                ids.push(id);
            }
            p.sample.push(pprof::Sample {
                location_id: ids,
                value: vec![s.blocks.round() as i64, s.bytes.round() as i64],
            });
        }
        p.string_table = strings.table;
        p
    }

    /// The allocation sites: the stacks grouped by their first function outside the allocator
    /// and the standard library's allocation machinery (its line that holds the most), biggest
    /// estimated bytes first. Stacks made of the runtime alone (no function of the program: the
    /// Rust runtime's start-up allocations that live until exit) are left out.
    pub(crate) fn sites(&self) -> Vec<Site> {
        // (site, its bytes per line) by (function, file).
        type Key = (String, Option<String>);
        let mut by_site: HashMap<Key, (Site, HashMap<Option<u32>, f64>)> = HashMap::new();
        for s in &self.stacks {
            let frames = self.frames(s);
            if frames
                .iter()
                .all(|f| is_machinery(&f.name) || RUNTIME.contains(&f.name.as_str()))
            {
                continue;
            }
            let first = frames
                .iter()
                .position(|f| !is_machinery(&f.name))
                .unwrap_or(0);
            let Some(site) = frames.get(first) else {
                continue;
            };
            let key = (site.name.clone(), site.file.clone());
            let (e, lines) = by_site.entry(key).or_insert_with(|| {
                let site = Site {
                    function: site.name.clone(),
                    file: site.file.clone().map(Into::into),
                    line: site.line,
                    bytes: 0,
                    blocks: 0,
                    samples: 0,
                    callers: frames
                        .iter()
                        .skip(first + 1)
                        .take(8)
                        .map(|f| f.name.clone())
                        .collect(),
                };
                (site, HashMap::new())
            });
            e.bytes += s.bytes.round() as u64;
            e.blocks += s.blocks.round() as u64;
            e.samples += s.samples;
            *lines.entry(site.line).or_insert(0.0) += s.bytes;
        }
        let mut sites: Vec<Site> = by_site
            .into_values()
            .map(|(mut site, lines)| {
                if let Some((line, _)) = lines.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
                    site.line = line;
                }
                site
            })
            .collect();
        sites.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.function.cmp(&b.function)));
        sites
    }

    /// The leak report: a header line with the totals, then the `top` biggest sites, each with
    /// its estimated bytes, blocks and samples, its location and two callers.
    pub(crate) fn leak_report(&self, top: usize, when: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (bytes, blocks) = self.totals();
        let sites = self.sites();
        if sites.is_empty() {
            let _ = writeln!(
                out,
                "smallarena: leak report {when}: no live sampled allocation from the program (one \
                 sample per {} bytes allocated on average){}",
                self.rate,
                runtime_note(bytes)
            );
            return out;
        }
        let _ = writeln!(
            out,
            "smallarena: leak report {when}: an estimated {} bytes in {} blocks still live, \
             from {} samples (one per {} bytes allocated on average) at {} sites",
            bytes.round() as u64,
            blocks.round() as u64,
            self.live,
            self.rate,
            sites.len()
        );
        let shown: u64 = sites.iter().map(|s| s.bytes).sum();
        let runtime = (bytes.round() as u64).saturating_sub(shown);
        if runtime > 0 {
            let _ = writeln!(
                out,
                "smallarena: of which {runtime} bytes are the runtime's own (stacks with no \
                 function of the program: not listed)"
            );
        }
        if self.dropped > 0 {
            let _ = writeln!(
                out,
                "smallarena: {} samples were lost (the table of {} live samples was full)",
                self.dropped,
                table::CAPACITY
            );
        }
        let _ = writeln!(
            out,
            "{:>14} {:>12} {:>8}  site",
            "est. bytes", "est. blocks", "samples"
        );
        for s in sites.iter().take(top) {
            let _ = write!(
                out,
                "{:>14} {:>12} {:>8}  {}",
                s.bytes, s.blocks, s.samples, s.function
            );
            if let Some(file) = &s.file {
                let _ = write!(out, " ({}", file.display());
                if let Some(line) = s.line {
                    let _ = write!(out, ":{line}");
                }
                let _ = write!(out, ")");
            }
            let _ = writeln!(out);
            if !s.callers.is_empty() {
                let chain: Vec<&str> = s.callers.iter().take(2).map(String::as_str).collect();
                let _ = writeln!(out, "{:>37}  called from {}", "", chain.join(" <- "));
            }
        }
        if sites.len() > top {
            let _ = writeln!(out, "... and {} more sites", sites.len() - top);
        }
        out
    }
}

/// The leak report's note on bytes held by the runtime alone, when there are some.
fn runtime_note(bytes: f64) -> String {
    let b = bytes.round() as u64;
    if b == 0 {
        String::new()
    } else {
        format!("; the runtime's own start-up allocations hold an estimated {b} bytes")
    }
}

/// The functions `ip` (a return address) lies in, innermost (inlined) first.
fn resolve(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    // `resolve` looks up `ip - 1`: inside the call instruction, not after it.
    backtrace::resolve(ip as *mut core::ffi::c_void, |sym| {
        let (name, system_name) = match sym.name() {
            Some(n) => (
                format!("{n:#}"),
                String::from_utf8_lossy(n.as_bytes()).into_owned(),
            ),
            None => (format!("{ip:#x}"), String::new()),
        };
        frames.push(Frame {
            name,
            system_name,
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            name: format!("{ip:#x}"),
            system_name: String::new(),
            file: None,
            line: None,
        });
    }
    frames
}

/// A pprof string table under construction.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.ids.insert(String::new(), 0);
        }
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.ids.insert(s.to_owned(), i);
        i
    }
}
