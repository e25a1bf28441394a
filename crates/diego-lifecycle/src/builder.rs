//! The builder's buildpack sequence (Cloud Foundry's buildpack interface): each buildpack is a
//! directory with `bin/detect`, optionally `bin/supply` and `bin/finalize`, and `bin/release`.
//!
//! 1. `bin/detect BUILD_DIR` of each buildpack in order; the first that exits 0 stages the app
//!    (a buildpack named by the user is used without detection).
//! 2. `bin/supply BUILD_DIR CACHE_DIR DEPS_DIR INDEX`, then
//!    `bin/finalize BUILD_DIR CACHE_DIR DEPS_DIR INDEX PROFILE_DIR`, when present.
//! 3. `bin/release BUILD_DIR`: its stdout's `default_process_types`.
//! 4. A `Procfile` in the app's directory overrides those process types; the `web` one is the
//!    start command.
//!
//! The steps' output goes to the builder's own (the staging log); only `bin/release`'s stdout
//! is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::procfile::{Procfile, ProcfileError};
use crate::release::{self, ReleaseError};

/// A buildpack: its name and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buildpack {
    pub name: String,
    pub dir: PathBuf,
}

/// The directories a staging works in.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The app's files, changed in place by the buildpack; the droplet's `app/`.
    pub build_dir: PathBuf,
    /// Kept between stagings of the same app.
    pub cache_dir: PathBuf,
    /// Dependencies a buildpack supplies, in `DEPS_DIR/<index>`.
    pub deps_dir: PathBuf,
    /// Scripts the launcher sources before the start command.
    pub profile_dir: PathBuf,
}

/// What staging settled on, written as the staging result JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagingResult {
    pub lifecycle_type: String,
    pub detected_buildpack: String,
    pub process_types: BTreeMap<String, String>,
    pub start_command: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("no buildpack detected this app; tried, in order: {}", tried.join(", "))]
    NoneDetected { tried: Vec<String> },
    #[error("no buildpack is named {name:?}; there are: {}", known.join(", "))]
    UnknownBuildpack { name: String, known: Vec<String> },
    #[error("buildpack {buildpack:?} failed at bin/{step}: {status}")]
    StepFailed {
        buildpack: String,
        step: &'static str,
        status: String,
    },
    #[error(
        "buildpack {buildpack:?} gave no web start command and the app has no Procfile with a `web:` line"
    )]
    NoStartCommand { buildpack: String },
    #[error("buildpack {buildpack:?}: {source}")]
    Release {
        buildpack: String,
        #[source]
        source: ReleaseError,
    },
    #[error(transparent)]
    Procfile(#[from] ProcfileError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl StagingError {
    /// The builder's exit status for this failure, Cloud Foundry's where it has one: 222 no
    /// buildpack detected the app, 223 a build step failed, 224 the release step or the start
    /// command failed; 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StagingError::NoneDetected { .. } | StagingError::UnknownBuildpack { .. } => 222,
            StagingError::StepFailed { step, .. } if *step != "release" => 223,
            StagingError::StepFailed { .. }
            | StagingError::NoStartCommand { .. }
            | StagingError::Release { .. }
            | StagingError::Procfile(_) => 224,
            StagingError::Io { .. } => 1,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StagingError {
    let what = what.into();
    move |source| StagingError::Io { what, source }
}

/// Runs the sequence over `layout` with `buildpacks` in detection order, or only the one
/// named `chosen`.
pub fn stage(
    buildpacks: &[Buildpack],
    layout: &Layout,
    chosen: Option<&str>,
) -> Result<StagingResult, StagingError> {
    let (index, bp) = match chosen {
        Some(name) => buildpacks
            .iter()
            .enumerate()
            .find(|(_, b)| b.name == name)
            .ok_or_else(|| StagingError::UnknownBuildpack {
                name: name.to_string(),
                known: buildpacks.iter().map(|b| b.name.clone()).collect(),
            })?,
        None => detect(buildpacks, &layout.build_dir)?,
    };
    let deps = layout.deps_dir.join(index.to_string());
    for dir in [&layout.cache_dir, &deps, &layout.profile_dir] {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let (build, cache, deps_root) = (
        layout.build_dir.as_os_str(),
        layout.cache_dir.as_os_str(),
        layout.deps_dir.as_os_str(),
    );
    let idx = index.to_string();
    let steps: [(&'static str, Vec<&std::ffi::OsStr>); 2] = [
        ("supply", vec![build, cache, deps_root, idx.as_ref()]),
        (
            "finalize",
            vec![
                build,
                cache,
                deps_root,
                idx.as_ref(),
                layout.profile_dir.as_os_str(),
            ],
        ),
    ];
    for (step, args) in steps {
        let script = bp.dir.join("bin").join(step);
        if script.exists() {
            let status = Command::new(&script)
                .args(args)
                .stdin(Stdio::null())
                .status()
                .map_err(io(format!("running {}", script.display())))?;
            if !status.success() {
                return Err(StagingError::StepFailed {
                    buildpack: bp.name.clone(),
                    step,
                    status: status.to_string(),
                });
            }
        }
    }
    let script = bp.dir.join("bin/release");
    let out = Command::new(&script)
        .arg(build)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(StagingError::StepFailed {
            buildpack: bp.name.clone(),
            step: "release",
            status: out.status.to_string(),
        });
    }
    let mut process_types =
        release::default_process_types(&String::from_utf8_lossy(&out.stdout)).map_err(|source| {
            StagingError::Release {
                buildpack: bp.name.clone(),
                source,
            }
        })?;
    let procfile = layout.build_dir.join("Procfile");
    match std::fs::read_to_string(&procfile) {
        Ok(text) => process_types.extend(Procfile::parse(&text)?.processes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("reading {}", procfile.display()))(e)),
    }
    let start_command = process_types
        .get("web")
        .cloned()
        .ok_or_else(|| StagingError::NoStartCommand {
            buildpack: bp.name.clone(),
        })?;
    Ok(StagingResult {
        lifecycle_type: "buildpack".into(),
        detected_buildpack: bp.name.clone(),
        process_types,
        start_command,
    })
}

/// The first buildpack whose `bin/detect` accepts `build_dir`, with its index.
fn detect<'b>(buildpacks: &'b [Buildpack], build_dir: &Path) -> Result<(usize, &'b Buildpack), StagingError> {
    for (i, bp) in buildpacks.iter().enumerate() {
        let script = bp.dir.join("bin/detect");
        let status = Command::new(&script)
            .arg(build_dir)
            .stdin(Stdio::null())
            .status()
            .map_err(io(format!("running {}", script.display())))?;
        if status.success() {
            return Ok((i, bp));
        }
    }
    Err(StagingError::NoneDetected {
        tried: buildpacks.iter().map(|b| b.name.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt as _;

    /// A buildpack of shell scripts in `root/name`.
    fn buildpack(root: &Path, name: &str, scripts: &[(&str, &str)]) -> Buildpack {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        for (step, body) in scripts {
            let path = dir.join("bin").join(step);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Buildpack {
            name: name.into(),
            dir,
        }
    }

    fn layout(root: &Path, files: &[(&str, &str)]) -> Layout {
        let build_dir = root.join("app");
        std::fs::create_dir_all(&build_dir).unwrap();
        for (name, text) in files {
            std::fs::write(build_dir.join(name), text).unwrap();
        }
        Layout {
            build_dir,
            cache_dir: root.join("cache"),
            deps_dir: root.join("deps"),
            profile_dir: root.join("profile.d"),
        }
    }

    /// `static` (detects index.html) then `python` (app.py, supplies and finalizes).
    fn packs(root: &Path) -> Vec<Buildpack> {
        vec![
            buildpack(
                root,
                "static",
                &[
                    ("detect", r#"test -f "$1/index.html""#),
                    (
                        "release",
                        "echo 'default_process_types:'; echo '  web: httpd -f -p $PORT'",
                    ),
                ],
            ),
            buildpack(
                root,
                "python",
                &[
                    ("detect", r#"test -f "$1/app.py""#),
                    ("supply", r#"echo "python3" > "$3/$4/runtime""#),
                    ("finalize", r#"echo 'export PYTHONUNBUFFERED=1' > "$5/python.sh""#),
                    (
                        "release",
                        "echo '---'; echo 'default_process_types: {web: python3 app.py}'",
                    ),
                ],
            ),
        ]
    }

    #[test]
    fn the_first_buildpack_that_detects_stages_the_app() {
        let root = tempfile::tempdir().unwrap();
        let packs = packs(root.path());
        let l = layout(root.path(), &[("app.py", "print()")]);
        let result = stage(&packs, &l, None).unwrap();
        assert_eq!(result.detected_buildpack, "python");
        assert_eq!(result.start_command, "python3 app.py");
        assert_eq!(result.lifecycle_type, "buildpack");
        assert_eq!(
            std::fs::read_to_string(l.deps_dir.join("1/runtime")).unwrap(),
            "python3\n",
            "supply got its index"
        );
        assert!(
            l.profile_dir.join("python.sh").exists(),
            "finalize got the profile dir"
        );
    }

    #[test]
    fn a_procfile_overrides_the_buildpack_and_a_named_buildpack_skips_detection() {
        let root = tempfile::tempdir().unwrap();
        let packs = packs(root.path());
        let l = layout(
            root.path(),
            &[("index.html", "hi"), ("Procfile", "web: ./serve\nworker: ./w\n")],
        );
        let result = stage(&packs, &l, None).unwrap();
        assert_eq!(result.detected_buildpack, "static");
        assert_eq!(result.start_command, "./serve");
        assert_eq!(result.process_types["worker"], "./w");

        let forced = stage(&packs, &layout(root.path(), &[]), Some("python"));
        assert_eq!(forced.unwrap().detected_buildpack, "python");
        let unknown = stage(&packs, &l, Some("ruby")).unwrap_err().to_string();
        assert!(
            unknown.contains("\"ruby\"") && unknown.contains("static, python"),
            "{unknown}"
        );
    }

    #[test]
    fn failures_say_what_was_tried_and_which_step_failed() {
        let root = tempfile::tempdir().unwrap();
        let packs = packs(root.path());
        let none = stage(&packs, &layout(root.path(), &[("README", "")]), None).unwrap_err();
        assert_eq!(
            none.to_string(),
            "no buildpack detected this app; tried, in order: static, python"
        );

        let broken = vec![buildpack(
            root.path(),
            "broken",
            &[("detect", "exit 0"), ("supply", "echo 'no network' >&2; exit 3")],
        )];
        let e = stage(&broken, &layout(root.path(), &[]), None).unwrap_err();
        assert_eq!((none.exit_code(), e.exit_code()), (222, 223));
        let e = e.to_string();
        assert!(
            e.contains("\"broken\" failed at bin/supply") && e.contains("3"),
            "{e}"
        );

        let silent = vec![buildpack(
            root.path(),
            "silent",
            &[("detect", "exit 0"), ("release", "echo 'addons: []'")],
        )];
        let e = stage(&silent, &layout(root.path(), &[]), None).unwrap_err();
        assert!(matches!(e, StagingError::NoStartCommand { .. }), "{e}");
        assert_eq!(e.exit_code(), 224);

        let l = layout(root.path(), &[("index.html", ""), ("Procfile", "web\n")]);
        let e = stage(&packs, &l, None).unwrap_err().to_string();
        assert!(e.contains("Procfile line 1"), "{e}");
    }
}
