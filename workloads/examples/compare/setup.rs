//! Building what the comparison runs, and finding the allocator libraries to preload.

use crate::programs::{Lang, Workload, ALLOCATORS};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate is `workloads/` inside it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workloads/ sits inside the workspace")
        .to_path_buf()
}

/// The Debian libraries to preload for the C programs: (allocator, file name).
/// `scripts/setup` installs their packages (`libjemalloc2`, `libmimalloc2.0`,
/// `libtcmalloc-minimal4`) when it finds none of these files in the same folders.
pub const DEBIAN_LIBS: [(&str, &str); 3] = [
    ("jemalloc", "libjemalloc.so.2"),
    ("mimalloc", "libmimalloc.so.2"),
    ("tcmalloc", "libtcmalloc_minimal.so.4"),
];

/// The folders searched for [`DEBIAN_LIBS`], in order (the multiarch folders are globbed).
const LIB_DIRS: [&str; 4] = ["/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64"];

/// The third-party allocator libraries found on this machine.
pub struct Preloads(Vec<(&'static str, PathBuf)>);

impl Preloads {
    /// The library of `allocator`, if installed.
    pub fn get(&self, allocator: &str) -> Option<&Path> {
        self.0
            .iter()
            .find(|(a, _)| *a == allocator)
            .map(|(_, p)| p.as_path())
    }
}

/// Looks for each of [`DEBIAN_LIBS`] in the multiarch folders (`/usr/lib/*-linux-*`), then in
/// [`LIB_DIRS`].
pub fn find_preloads() -> Preloads {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        let mut multi: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains("-linux-"))
            })
            .collect();
        multi.sort();
        dirs.extend(multi);
    }
    dirs.extend(LIB_DIRS.iter().map(PathBuf::from));
    let mut found = Vec::new();
    for (alloc, file) in DEBIAN_LIBS {
        if let Some(p) = dirs.iter().map(|d| d.join(file)).find(|p| p.exists()) {
            found.push((alloc, p));
        }
    }
    Preloads(found)
}

/// Where the built programs are, and how to run one with one allocator.
pub struct Bins {
    target: PathBuf,
    c_dir: PathBuf,
    preload: PathBuf,
    debian: Preloads,
}

impl Bins {
    /// The command that runs `w` with `allocator` at `scale` (a pair that [`Bins::runs`]).
    pub fn command(&self, w: &Workload, allocator: &str, scale: &str) -> Command {
        match w.lang {
            Lang::Rust => {
                let mut c =
                    Command::new(self.target.join("release").join(format!("wl-{allocator}")));
                c.args([w.name, scale]).env_remove("LD_PRELOAD");
                c
            }
            Lang::C => {
                let mut c = Command::new(self.c_dir.join(w.name));
                c.arg(scale).env_remove("LD_PRELOAD");
                match allocator {
                    "glibc" => {}
                    "smallarena" => {
                        c.env("LD_PRELOAD", &self.preload);
                    }
                    other => {
                        let lib = self
                            .debian
                            .get(other)
                            .unwrap_or_else(|| panic!("{other} is not installed"));
                        c.env("LD_PRELOAD", lib);
                    }
                }
                c
            }
        }
    }

    /// Whether `allocator` is measured on `w`: tcmalloc has no Rust binary, and a Debian
    /// library that is not installed leaves its allocator out of the C programs.
    pub fn runs(lang: Lang, allocator: &str, debian: &Preloads) -> bool {
        match lang {
            Lang::Rust => allocator != "tcmalloc",
            Lang::C => {
                matches!(allocator, "smallarena" | "glibc") || debian.get(allocator).is_some()
            }
        }
    }
}

fn cargo(root: &Path, step: &str, args: &[&str], target: &Path) {
    eprintln!(
        "compare: [{step}] cargo {} --target-dir {}",
        args.join(" "),
        target.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(args)
        .arg("--target-dir")
        .arg(target)
        .status()
        .expect("run cargo");
    if !status.success() {
        eprintln!("compare: cargo {} failed", args.join(" "));
        std::process::exit(1);
    }
}

/// Builds what the selected programs need, into `target` (`target/compare`: its own folder,
/// so that a `cargo test` holding the workspace's target folder can run this program): the
/// Rust workload binaries, the preload library (a build of its own: its smallarena features,
/// `libc-internal` and `initial-exec-tls`, must not reach the Rust binaries through feature
/// unification) and the C programs (`cc -O2 -pthread`).
pub fn build_all(
    root: &Path,
    target: &Path,
    workloads: &[Workload],
    allocators: &[usize],
    debian: &Preloads,
) -> Bins {
    let has = |l: Lang| workloads.iter().any(|w| w.lang == l);
    let steps = has(Lang::Rust) as usize + 2 * has(Lang::C) as usize;
    let mut step = 0;
    let mut next = || {
        step += 1;
        format!("build {step}/{steps}")
    };
    if has(Lang::Rust) {
        cargo(
            root,
            &next(),
            &["build", "--release", "-p", "smallarena-workloads", "--bins"],
            target,
        );
    }
    let c_dir = target.join("c");
    if has(Lang::C) {
        cargo(
            root,
            &next(),
            &["build", "--release", "-p", "smallarena-preload"],
            target,
        );
        let step = next();
        std::fs::create_dir_all(&c_dir).expect("create target/compare/c");
        let src = root.join("workloads").join("c");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        for w in workloads.iter().filter(|w| w.lang == Lang::C) {
            let out = c_dir.join(w.name);
            let file = src.join(format!("{}.c", w.name));
            eprintln!(
                "compare: [{step}] {cc} -O2 -pthread -o {} {}",
                out.display(),
                file.display()
            );
            let status = Command::new(&cc)
                .args(["-O2", "-pthread", "-Wall", "-o"])
                .arg(&out)
                .arg(&file)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
            if !status.success() {
                eprintln!("compare: compiling {} failed", file.display());
                std::process::exit(1);
            }
        }
        for &a in allocators {
            if !Bins::runs(Lang::C, ALLOCATORS[a], debian) {
                eprintln!(
                    "compare: {} is not installed (run scripts/setup): left out of the C programs",
                    ALLOCATORS[a]
                );
            }
        }
    }
    Bins {
        target: target.to_path_buf(),
        c_dir,
        preload: target.join("release").join("libsmallarena_preload.so"),
        debian: find_preloads(),
    }
}
