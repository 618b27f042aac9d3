//! From samples to figures: medians, spreads, ratios, geometric means, checksum agreement, and
//! the tables (text, Markdown, JSON).

use crate::measure::{Sample, Samples};
use crate::programs::{Lang, Workload, ALLOCATORS};
use serde::Serialize;
use std::fmt::Write as _;

/// The machine's load when the comparison started (`/proc/loadavg`).
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes), or "unknown".
    pub text: String,
    /// The 1-minute load average.
    pub one: f64,
    /// CPUs available to this process.
    pub cpus: usize,
    /// Whether the 1-minute load is above half the CPUs (the numbers will be noisy).
    pub busy: bool,
}

/// Reads `/proc/loadavg`.
pub fn loadavg() -> Load {
    let raw = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = raw.split_whitespace().take(3).collect();
    let one = fields.first().and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Load {
        text: if fields.len() == 3 {
            fields.join(" ")
        } else {
            "unknown".into()
        },
        one,
        cpus,
        busy: one > cpus as f64 / 2.0,
    }
}

/// A median with the smallest and largest value it was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (not empty).
    pub fn of(v: &[f64]) -> Spread {
        assert!(!v.is_empty(), "no values");
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Wall time.
    Wall,
    /// CPU time, user + system.
    Cpu,
    /// Peak RSS.
    Rss,
}

impl Metric {
    /// All metrics, in table order.
    pub const ALL: [Metric; 3] = [Metric::Wall, Metric::Cpu, Metric::Rss];

    fn of(self, s: &Sample) -> f64 {
        match self {
            Metric::Wall => s.wall,
            Metric::Cpu => s.cpu,
            Metric::Rss => s.rss_kib as f64,
        }
    }
    /// The table's title.
    pub fn title(self) -> &'static str {
        match self {
            Metric::Wall => "wall time, ms: median (min-max)",
            Metric::Cpu => "CPU time (user + sys), ms: median",
            Metric::Rss => "peak RSS, MiB: median",
        }
    }
    /// The figure in the table's unit (ms or MiB).
    fn display(self, x: f64) -> f64 {
        match self {
            Metric::Wall | Metric::Cpu => x * 1e3,
            Metric::Rss => x / 1024.0,
        }
    }
}

/// One program with one allocator.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// The allocator.
    pub allocator: &'static str,
    /// Wall time, seconds.
    pub wall: Spread,
    /// CPU time, seconds.
    pub cpu: Spread,
    /// Peak RSS, KiB.
    pub rss_kib: Spread,
    /// smallarena / this allocator, per round (the same round's runs, which ran next to each
    /// other), median and min-max over rounds; `None` for smallarena itself.
    pub ratio: Option<Ratios>,
    /// Every run, in round order.
    pub samples: Vec<Sample>,
}

/// smallarena / other for each metric.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ratios {
    /// Wall time.
    pub wall: Spread,
    /// CPU time.
    pub cpu: Spread,
    /// Peak RSS.
    pub rss: Spread,
}

impl Ratios {
    /// The ratio of `m`.
    pub fn get(&self, m: Metric) -> Spread {
        match m {
            Metric::Wall => self.wall,
            Metric::Cpu => self.cpu,
            Metric::Rss => self.rss,
        }
    }
}

/// One program with every allocator measured on it.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The program's name.
    pub name: &'static str,
    /// What it does.
    pub label: &'static str,
    /// Rust workload or C program.
    pub lang: Lang,
    /// The checksum every allocator printed (the first one, when they disagree).
    pub checksum: String,
    /// One cell per allocator measured on it, smallarena first.
    pub cells: Vec<Cell>,
}

/// The geometric mean of one group's ratios against one allocator.
#[derive(Clone, Debug, Serialize)]
pub struct Geomean {
    /// "Rust", "C" or "all".
    pub group: &'static str,
    /// The other allocator.
    pub allocator: &'static str,
    /// How many programs it covers.
    pub programs: usize,
    /// Per metric: the geometric mean of the programs' median ratios, and min-max of the
    /// per-round geometric means.
    pub ratio: Ratios,
}

/// Everything the comparison found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// UTC date of the run (YYYY-MM-DD).
    pub date: String,
    /// Load at start.
    pub load: Load,
    /// Rounds.
    pub rounds: usize,
    /// Whether the inputs were the quick ones.
    pub quick: bool,
    /// The direction of every ratio.
    pub ratio_is: &'static str,
    /// One row per program.
    pub rows: Vec<Row>,
    /// Geometric means per group and overall, per allocator.
    pub geomeans: Vec<Geomean>,
    /// Programs on which allocators printed different checksums, described.
    pub disagreements: Vec<String>,
}

/// The direction of every ratio, as said in the headers.
pub const RATIO_IS: &str = "smallarena / other: below 1 = smallarena better";

/// Programs whose checksums differ between allocators or rounds: one description each.
/// `per_allocator` holds, per allocator, the checksums of its runs.
pub fn checksum_disagreements(program: &str, per_allocator: &[(&str, Vec<String>)]) -> Vec<String> {
    let Some(first) = per_allocator.iter().flat_map(|(_, v)| v.first()).next() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (a, sums) in per_allocator {
        for (round, s) in sums.iter().enumerate() {
            if s != first {
                out.push(format!(
                    "{program}: {a} printed checksum {s} in round {}, expected {first}",
                    round + 1
                ));
            }
        }
    }
    out
}

/// The geometric mean of positive values.
pub fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// Today's date (UTC), YYYY-MM-DD, from the system clock.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Report {
    /// Summarizes `samples` (indexed by position in `workloads` and in [`ALLOCATORS`]).
    pub fn new(
        workloads: &[Workload],
        allocators: &[usize],
        samples: &Samples,
        rounds: usize,
        quick: bool,
        load: Load,
    ) -> Report {
        let mut rows = Vec::new();
        let mut disagreements = Vec::new();
        for (wi, w) in workloads.iter().enumerate() {
            let measured: Vec<usize> = allocators
                .iter()
                .copied()
                .filter(|&a| !samples.get(wi, a).is_empty())
                .collect();
            let sums: Vec<(&str, Vec<String>)> = measured
                .iter()
                .map(|&a| {
                    let v = samples.get(wi, a).iter().map(|s| s.checksum.clone());
                    (ALLOCATORS[a], v.collect())
                })
                .collect();
            disagreements.extend(checksum_disagreements(w.name, &sums));
            let sa = samples.get(wi, 0);
            let cells = measured
                .iter()
                .map(|&a| {
                    let s = samples.get(wi, a);
                    let of = |m: Metric| Spread::of(&s.iter().map(|x| m.of(x)).collect::<Vec<_>>());
                    let ratio = |m: Metric| {
                        let per_round: Vec<f64> =
                            sa.iter().zip(s).map(|(x, y)| m.of(x) / m.of(y)).collect();
                        Spread::of(&per_round)
                    };
                    Cell {
                        allocator: ALLOCATORS[a],
                        wall: of(Metric::Wall),
                        cpu: of(Metric::Cpu),
                        rss_kib: of(Metric::Rss),
                        ratio: (a != 0).then(|| Ratios {
                            wall: ratio(Metric::Wall),
                            cpu: ratio(Metric::Cpu),
                            rss: ratio(Metric::Rss),
                        }),
                        samples: s.to_vec(),
                    }
                })
                .collect();
            rows.push(Row {
                name: w.name,
                label: w.label,
                lang: w.lang,
                checksum: sums
                    .first()
                    .and_then(|(_, v)| v.first())
                    .cloned()
                    .unwrap_or_default(),
                cells,
            });
        }
        let geomeans = geomeans(&rows, rounds);
        Report {
            date: today(),
            load,
            rounds,
            quick,
            ratio_is: RATIO_IS,
            rows,
            geomeans,
            disagreements,
        }
    }

    /// The allocators that appear in any row, in [`ALLOCATORS`] order.
    pub fn allocators(&self) -> Vec<&'static str> {
        ALLOCATORS
            .iter()
            .copied()
            .filter(|a| {
                self.rows
                    .iter()
                    .any(|r| r.cells.iter().any(|c| c.allocator == *a))
            })
            .collect()
    }

    /// The geometric mean of `group` against `allocator`, if there is one.
    pub fn geomean(&self, group: &str, allocator: &str) -> Option<&Geomean> {
        self.geomeans
            .iter()
            .find(|g| g.group == group && g.allocator == allocator)
    }

    /// The groups with geometric means, in order ("Rust", "C", "all").
    pub fn groups(&self) -> Vec<&'static str> {
        let mut g: Vec<&'static str> = Vec::new();
        for x in &self.geomeans {
            if !g.contains(&x.group) {
                g.push(x.group);
            }
        }
        g
    }

    /// One table per metric as rows of cells (the header first).
    fn tables(&self) -> Vec<(String, Vec<Vec<String>>)> {
        let allocs = self.allocators();
        let mut out = Vec::new();
        for m in Metric::ALL {
            let mut t = Vec::new();
            let mut head = vec!["program".to_string()];
            head.extend(allocs.iter().map(|a| a.to_string()));
            head.extend(allocs.iter().skip(1).map(|a| format!("sa/{a}")));
            t.push(head);
            for r in &self.rows {
                let mut line = vec![format!("{} ({}: {})", r.label, r.lang.group(), r.name)];
                for a in &allocs {
                    line.push(match r.cells.iter().find(|c| c.allocator == *a) {
                        None => "-".into(),
                        Some(c) => match m {
                            Metric::Wall if self.rounds > 1 => format!(
                                "{} ({}-{})",
                                num(m.display(c.wall.median)),
                                num(m.display(c.wall.min)),
                                num(m.display(c.wall.max))
                            ),
                            Metric::Wall => num(m.display(c.wall.median)),
                            Metric::Cpu => num(m.display(c.cpu.median)),
                            Metric::Rss => format!("{:.1}", m.display(c.rss_kib.median)),
                        },
                    });
                }
                for a in allocs.iter().skip(1) {
                    line.push(
                        r.cells
                            .iter()
                            .find(|c| c.allocator == *a)
                            .and_then(|c| c.ratio)
                            .map_or("-".into(), |x| format!("{:.2}", x.get(m).median)),
                    );
                }
                t.push(line);
            }
            for g in self.groups() {
                let n = self
                    .geomeans
                    .iter()
                    .filter(|x| x.group == g)
                    .map(|x| x.programs)
                    .max()
                    .unwrap_or(0);
                let mut line = vec![format!("geometric mean, {g} ({n} programs)")];
                line.extend(allocs.iter().map(|_| String::new()));
                for a in allocs.iter().skip(1) {
                    line.push(
                        self.geomean(g, a)
                            .map_or("-".into(), |x| format!("{:.3}", x.ratio.get(m).median)),
                    );
                }
                t.push(line);
            }
            let title = if m == Metric::Wall && self.rounds == 1 {
                "wall time, ms"
            } else {
                m.title()
            };
            out.push((title.to_string(), t));
        }
        out
    }

    fn header(&self) -> String {
        format!(
            "{} round(s){}, all allocators interleaved in each round; {}; load average at start \
             {} ({} CPUs). Ratios are {RATIO_IS} (the median over rounds of the ratio within a \
             round). Rust workloads: #[global_allocator] (jemalloc: tikv-jemallocator, mimalloc: \
             the mimalloc crate); C programs: LD_PRELOAD (Debian's libraries; glibc: nothing \
             preloaded; tcmalloc has no Rust binary, so its geometric means cover the C \
             programs only).",
            self.rounds,
            if self.quick {
                " at the quick scale"
            } else {
                ""
            },
            self.date,
            self.load.text,
            self.load.cpus
        )
    }

    fn footer(&self) -> String {
        if self.disagreements.is_empty() {
            "Every allocator printed the same checksum for every program in every round.".into()
        } else {
            format!("CHECKSUMS DISAGREE: {}", self.disagreements.join("; "))
        }
    }

    /// The tables as aligned plain text.
    pub fn text(&self) -> String {
        let mut s = format!("\n{}\n", wrap(&self.header(), 100));
        for (title, t) in self.tables() {
            let _ = writeln!(s, "\n{title}");
            let widths: Vec<usize> = (0..t[0].len())
                .map(|i| t.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
                .collect();
            for r in &t {
                let mut line = String::new();
                for (i, c) in r.iter().enumerate() {
                    if i == 0 {
                        let _ = write!(line, "{c:<w$}", w = widths[0]);
                    } else {
                        let _ = write!(line, "  {c:>w$}", w = widths[i]);
                    }
                }
                let _ = writeln!(s, "{}", line.trim_end());
            }
        }
        let _ = writeln!(s, "\n{}", self.footer());
        s
    }

    /// The tables as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!("{}\n", self.header());
        for (title, t) in self.tables() {
            let _ = writeln!(s, "\n**{title}**\n");
            let _ = writeln!(s, "| {} |", t[0].join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(t[0].len().saturating_sub(1)));
            for r in &t[1..] {
                let cells: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if r[0].starts_with("geometric mean") && !c.is_empty() && c != "-" && i > 0
                        {
                            format!("**{c}**")
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                let _ = writeln!(s, "| {} |", cells.join(" | "));
            }
        }
        let _ = writeln!(s, "\n{}", self.footer());
        s
    }

    /// Everything, as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialize the report")
    }
}

/// 3 significant figures at most, no decimals from 100 up.
fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Breaks `text` into lines of at most `width` characters at spaces.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for word in text.split_whitespace() {
        if len > 0 && len + 1 + word.len() > width {
            out.push('\n');
            len = 0;
        } else if len > 0 {
            out.push(' ');
            len += 1;
        }
        out.push_str(word);
        len += word.len();
    }
    out
}

/// Geometric means of the ratios per group ("Rust", "C") and over all programs, against each
/// allocator, over the programs measured with it.
fn geomeans(rows: &[Row], rounds: usize) -> Vec<Geomean> {
    let mut out = Vec::new();
    let langs: Vec<Lang> = [Lang::Rust, Lang::C]
        .into_iter()
        .filter(|l| rows.iter().any(|r| r.lang == *l))
        .collect();
    let mut groups: Vec<(&'static str, Option<Lang>)> =
        langs.iter().map(|l| (l.group(), Some(*l))).collect();
    if langs.len() > 1 {
        groups.push(("all", None));
    }
    for (group, lang) in groups {
        for a in ALLOCATORS.iter().skip(1) {
            // (smallarena's cell, this allocator's cell) of every program in the group.
            let pairs: Vec<(&Cell, &Cell)> = rows
                .iter()
                .filter(|r| lang.is_none_or(|l| r.lang == l))
                .filter_map(|r| Some((&r.cells[0], r.cells.iter().find(|c| c.allocator == *a)?)))
                .collect();
            let ratios: Vec<Ratios> = pairs.iter().filter_map(|(_, o)| o.ratio).collect();
            if ratios.is_empty() {
                continue;
            }
            let one = |m: Metric| {
                let median = geomean(&ratios.iter().map(|r| r.get(m).median).collect::<Vec<_>>());
                // Per round: the geometric mean over programs of that round's ratios.
                let per_round: Vec<f64> = (0..rounds)
                    .filter_map(|k| {
                        let v: Option<Vec<f64>> = pairs
                            .iter()
                            .map(|(sa, o)| Some(m.of(sa.samples.get(k)?) / m.of(o.samples.get(k)?)))
                            .collect();
                        v.map(|v| geomean(&v))
                    })
                    .collect();
                let s = if per_round.is_empty() {
                    Spread::of(&[median])
                } else {
                    Spread::of(&per_round)
                };
                Spread {
                    median,
                    min: s.min.min(median),
                    max: s.max.max(median),
                }
            };
            out.push(Geomean {
                group,
                allocator: a,
                programs: ratios.len(),
                ratio: Ratios {
                    wall: one(Metric::Wall),
                    cpu: one(Metric::Cpu),
                    rss: one(Metric::Rss),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn agreeing_checksums_pass() {
        let per = [
            ("smallarena", sums(&["7", "7"])),
            ("glibc", sums(&["7", "7"])),
        ];
        assert!(checksum_disagreements("p", &per).is_empty());
    }

    #[test]
    fn a_differing_checksum_is_named() {
        let per = [
            ("smallarena", sums(&["7", "7"])),
            ("mimalloc", sums(&["7", "8"])),
        ];
        let d = checksum_disagreements("p", &per);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("mimalloc") && d[0].contains("round 2"),
            "{d:?}"
        );
    }

    #[test]
    fn spread_and_geomean() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert!((geomean(&[0.5, 2.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn date_is_iso() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
    }
}
