//! Downloaded archives, made safe before they reach a container: a tar, gzipped tar or zip
//! (told apart by their first bytes, as Diego does) is read on the host, every entry is checked
//! against the rules below, and the entries that pass are written out again as a plain tar
//! stream for the backend's `stream_in`.
//!
//! The rules — nothing may land outside the destination `to`:
//! - an entry whose path is absolute, contains a `..` component, or passes through a symlink
//!   made by an earlier entry of the same archive (`a -> /etc`, then `a/passwd`) refuses the
//!   whole archive ([`ArchiveError::Unsafe`]): nothing of it is extracted;
//! - a hard link must name a regular file an earlier entry made, by a path that obeys the rules
//!   above; otherwise the archive is refused;
//! - a symlink whose target is absolute or climbs out of the destination (followed through the
//!   archive's own symlinks) is skipped and reported; the rest of the archive is kept, but an
//!   entry below the skipped symlink's path still refuses the archive;
//! - devices, fifos and other special files are skipped and reported;
//! - set-uid/set-gid bits are dropped; owners are not kept (the backend writes as itself).
//!
//! The backend applies its own confinement when it writes (see `diego_garden::tar`), since
//! symlinks already in the container can lead out of it too; this pass is about the archive.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

/// What the first bytes say an archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    Gzip,
    Zip,
}

impl Format {
    /// gzip: `1f 8b`; zip: `PK\x03\x04` (or `PK\x05\x06`, an empty zip); anything else is taken
    /// as tar.
    pub fn detect(head: &[u8]) -> Format {
        if head.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Format::Zip
        } else {
            Format::Tar
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry would write outside the destination: the archive is refused.
    #[error("archive entry {path:?} {reason}")]
    Unsafe { path: String, reason: String },
    /// Not a readable archive of its format.
    #[error("reading the {format:?} archive: {message}")]
    Corrupt { format: Format, message: String },
    /// Writing the clean tar failed.
    #[error("writing the extracted tar stream: {0}")]
    Io(#[source] io::Error),
}

/// An entry left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// What [`normalise`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub format: Option<Format>,
    /// Entries written to the clean tar.
    pub entries: usize,
    pub skipped: Vec<Skipped>,
}

/// Reads the archive in `input` (any [`Format`]) and writes its safe entries to `out` as a tar
/// stream. Blocking: call from a blocking thread.
pub fn normalise(input: &mut File, out: impl Write) -> Result<Report, ArchiveError> {
    input.seek(SeekFrom::Start(0)).map_err(ArchiveError::Io)?;
    let mut head = [0u8; 4];
    let n = read_head(input, &mut head).map_err(ArchiveError::Io)?;
    input.seek(SeekFrom::Start(0)).map_err(ArchiveError::Io)?;
    let format = Format::detect(&head[..n]);
    let mut s = Sanitiser::new(out);
    match format {
        Format::Tar => s.tar(BufReader::new(input), format)?,
        Format::Gzip => s.tar(flate2::read::MultiGzDecoder::new(BufReader::new(input)), format)?,
        Format::Zip => s.zip(input)?,
    }
    let Sanitiser {
        builder, mut report, ..
    } = s;
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(ArchiveError::Io)?;
    report.format = Some(format);
    Ok(report)
}

fn read_head(input: &mut File, head: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A path inside the destination as its components (no `.`, `..` or empty ones).
type Components = Vec<String>;

/// Splits an entry's path; an error says why it may not be written.
fn entry_path(raw: &str) -> Result<Components, String> {
    if raw.starts_with('/') {
        return Err("has an absolute path".into());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("has a '..' path component".into()),
            p => parts.push(p.to_string()),
        }
    }
    Ok(parts)
}

/// Most symlinks followed while resolving one target (Linux's limit).
const MAX_HOPS: usize = 40;

struct Sanitiser<W: Write> {
    builder: tar::Builder<W>,
    /// Symlinks made so far: path → target.
    symlinks: BTreeMap<Components, String>,
    /// Regular files made so far (valid hard-link targets).
    files: BTreeSet<Components>,
    report: Report,
}

enum Kind {
    Dir,
    File,
    Symlink(String),
    HardLink(String),
    Other(&'static str),
}

impl<W: Write> Sanitiser<W> {
    fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        Self {
            builder,
            symlinks: BTreeMap::new(),
            files: BTreeSet::new(),
            report: Report::default(),
        }
    }

    fn tar(&mut self, input: impl Read, format: Format) -> Result<(), ArchiveError> {
        let corrupt = |e: io::Error| ArchiveError::Corrupt {
            format,
            message: e.to_string(),
        };
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644);
            let mtime = header.mtime().unwrap_or(0);
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default()
            };
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link()),
                tar::EntryType::Link => Kind::HardLink(link()),
                tar::EntryType::Char => Kind::Other("a character device"),
                tar::EntryType::Block => Kind::Other("a block device"),
                tar::EntryType::Fifo => Kind::Other("a fifo"),
                // Metadata only (`git archive` writes a global pax header): nothing to extract.
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                _ => Kind::Other("of an unsupported entry type"),
            };
            let size = entry.size();
            self.add(&raw, kind, mode, mtime, size, &mut entry)
                .map_err(|e| match e {
                    AddError::Read(e) => corrupt(e),
                    AddError::Other(e) => e,
                })?;
        }
        Ok(())
    }

    fn zip(&mut self, input: &mut File) -> Result<(), ArchiveError> {
        let corrupt = |e: &dyn std::fmt::Display| ArchiveError::Corrupt {
            format: Format::Zip,
            message: e.to_string(),
        };
        let mut archive = zip::ZipArchive::new(input).map_err(|e| corrupt(&e))?;
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).map_err(|e| corrupt(&e))?;
            let raw = file.name().map_err(|e| corrupt(&e))?.into_owned();
            let unix = file.unix_mode();
            let mode = unix.unwrap_or(if file.is_dir() { 0o755 } else { 0o644 });
            let mtime = 0;
            let kind = if file.is_dir() {
                Kind::Dir
            } else if mode & 0o170000 == 0o120000 {
                let mut target = String::new();
                file.read_to_string(&mut target).map_err(|e| corrupt(&e))?;
                Kind::Symlink(target)
            } else if unix.is_some() && mode & 0o170000 != 0 && mode & 0o170000 != 0o100000 {
                Kind::Other("a special file")
            } else {
                Kind::File
            };
            let size = file.size();
            self.add(&raw, kind, mode, mtime, size, &mut file)
                .map_err(|e| match e {
                    AddError::Read(e) => corrupt(&e),
                    AddError::Other(e) => e,
                })?;
        }
        Ok(())
    }

    fn skip(&mut self, path: &str, reason: String) {
        tracing::warn!(path, %reason, "skipping archive entry");
        self.report.skipped.push(Skipped {
            path: path.to_string(),
            reason,
        });
    }

    /// Checks one entry and writes it (its content read from `data`) if it passes.
    fn add(
        &mut self,
        raw: &str,
        kind: Kind,
        mode: u32,
        mtime: u64,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), AddError> {
        let unsafe_entry = |reason: String| {
            AddError::Other(ArchiveError::Unsafe {
                path: raw.to_string(),
                reason,
            })
        };
        let path = entry_path(raw).map_err(unsafe_entry)?;
        if path.is_empty() {
            return Ok(()); // the destination itself (`./`)
        }
        for depth in 1..path.len() {
            if let Some(target) = self.symlinks.get(&path[..depth]) {
                return Err(unsafe_entry(format!(
                    "would be written through the symlink {:?} (-> {target:?}) made by an earlier entry",
                    path[..depth].join("/")
                )));
            }
        }
        let name = path.join("/");
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode & 0o1777);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        match kind {
            Kind::Other(what) => {
                self.skip(raw, format!("is {what}"));
                return Ok(());
            }
            Kind::Dir => {
                if self.symlinks.contains_key(&path) {
                    return Err(unsafe_entry(
                        "is a directory where an earlier entry made a symlink".into(),
                    ));
                }
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.builder
                    .append_data(&mut header, format!("{name}/"), io::empty())
                    .map_err(|e| AddError::Other(ArchiveError::Io(e)))?;
            }
            Kind::File => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let mut counted = Counted {
                    inner: data,
                    left: size,
                    error: None,
                };
                let res = self.builder.append_data(&mut header, &name, &mut counted);
                if let Some(e) = counted.error {
                    return Err(AddError::Read(e));
                }
                res.map_err(|e| AddError::Other(ArchiveError::Io(e)))?;
                self.symlinks.remove(&path);
                self.files.insert(path);
            }
            Kind::Symlink(target) => {
                if let Err(reason) = self.resolves_inside(&path[..path.len() - 1], &target) {
                    self.skip(raw, format!("is a symlink to {target:?}, which {reason}"));
                    // Still remembered: later entries must not treat its path as a directory.
                    self.files.remove(&path);
                    self.symlinks.insert(path, target);
                    return Ok(());
                }
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.builder
                    .append_link(&mut header, &name, &target)
                    .map_err(|e| AddError::Other(ArchiveError::Io(e)))?;
                self.files.remove(&path);
                self.symlinks.insert(path, target);
            }
            Kind::HardLink(target) => {
                let target_path = entry_path(&target)
                    .map_err(|r| unsafe_entry(format!("is a hard link to {target:?}, which {r}")))?;
                if !self.files.contains(&target_path) {
                    return Err(unsafe_entry(format!(
                        "is a hard link to {target:?}, which no earlier entry made as a regular file"
                    )));
                }
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                self.builder
                    .append_link(&mut header, &name, target_path.join("/"))
                    .map_err(|e| AddError::Other(ArchiveError::Io(e)))?;
                self.symlinks.remove(&path);
                self.files.insert(path);
            }
        }
        self.report.entries += 1;
        Ok(())
    }

    /// Whether a symlink in directory `dir` pointing at `target` stays inside the destination,
    /// following the symlinks this archive has made so far.
    fn resolves_inside(&self, dir: &[String], target: &str) -> Result<(), String> {
        if target.starts_with('/') {
            return Err("is absolute".into());
        }
        if target.is_empty() {
            return Err("is empty".into());
        }
        let mut at: Components = dir.to_vec();
        let mut pending: Vec<String> = target.split('/').rev().map(str::to_string).collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => {}
                ".." => {
                    if at.pop().is_none() {
                        return Err("leads out of the destination".into());
                    }
                }
                _ => {
                    at.push(part);
                    if let Some(next) = self.symlinks.get(&at) {
                        hops += 1;
                        if hops > MAX_HOPS || next.starts_with('/') {
                            return Err("cannot be resolved inside the destination".into());
                        }
                        at.pop();
                        pending.extend(next.split('/').rev().map(str::to_string));
                    }
                }
            }
        }
        Ok(())
    }
}

enum AddError {
    /// Reading the entry's content from the archive failed (a corrupt archive).
    Read(io::Error),
    Other(ArchiveError),
}

/// Reads exactly `left` bytes from `inner`, remembering a read error so it is reported as the
/// archive's fault rather than the output's.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    error: Option<io::Error>,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "entry is shorter than its header says",
                );
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw tar entry, written without the tar crate's path checks (so tests can make the
    /// malicious archives the tar crate itself would refuse to build).
    pub enum Raw<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Fifo(&'a str),
    }

    /// A ustar archive of `entries` with names written verbatim.
    pub fn raw_tar(entries: &[Raw]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            let (name, kind, link, data): (&str, u8, &str, &[u8]) = match e {
                Raw::File(n, d) => (n, b'0', "", d),
                Raw::Dir(n) => (n, b'5', "", b""),
                Raw::Symlink(n, t) => (n, b'2', t, b""),
                Raw::HardLink(n, t) => (n, b'1', t, b""),
                Raw::Fifo(n) => (n, b'6', "", b""),
            };
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..108].copy_from_slice(b"0000644\0");
            h[108..116].copy_from_slice(b"0000000\0");
            h[116..124].copy_from_slice(b"0000000\0");
            h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
            h[136..148].copy_from_slice(b"00000000000\0");
            h[156] = kind;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    /// A zip of `(name, content, unix mode)` entries, names verbatim.
    pub fn raw_zip(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            if mode & 0o170000 == 0o120000 {
                w.add_symlink(*name, std::str::from_utf8(data).unwrap(), opts)
                    .unwrap();
            } else if name.ends_with('/') {
                w.add_directory(*name, opts).unwrap();
            } else {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    pub fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn run(archive: &[u8]) -> Result<(Report, Vec<(String, String)>), ArchiveError> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(archive).unwrap();
        let mut out = Vec::new();
        let report = normalise(&mut f, &mut out)?;
        Ok((report, listing(&out)))
    }

    /// `(path, what)` of every entry of a tar: `file:<content>`, `dir`, `symlink:<target>`,
    /// `link:<target>`.
    fn listing(tar: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let what = match e.header().entry_type() {
                    tar::EntryType::Directory => "dir".to_string(),
                    tar::EntryType::Symlink => format!("symlink:{link}"),
                    tar::EntryType::Link => format!("link:{link}"),
                    _ => {
                        let mut s = String::new();
                        e.read_to_string(&mut s).unwrap();
                        format!("file:{s}")
                    }
                };
                (path, what)
            })
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn formats_are_detected_by_magic_bytes() {
        assert_eq!(Format::detect(&[0x1f, 0x8b, 8, 0]), Format::Gzip);
        assert_eq!(Format::detect(b"PK\x03\x04"), Format::Zip);
        assert_eq!(Format::detect(b"PK\x05\x06"), Format::Zip);
        assert_eq!(Format::detect(b"app/"), Format::Tar);
        assert_eq!(Format::detect(b""), Format::Tar);
    }

    #[test]
    fn tar_tgz_and_zip_give_the_same_clean_stream() {
        let tar = raw_tar(&[
            Raw::Dir("./app/"),
            Raw::File("./app/run.sh", b"echo hi"),
            Raw::Symlink("app/current", "run.sh"),
            Raw::HardLink("app/again", "app/run.sh"),
        ]);
        let want = pairs(&[
            ("app/", "dir"),
            ("app/run.sh", "file:echo hi"),
            ("app/current", "symlink:run.sh"),
            ("app/again", "link:app/run.sh"),
        ]);
        for (archive, format) in [(tar.clone(), Format::Tar), (gzip(&tar), Format::Gzip)] {
            let (report, got) = run(&archive).unwrap();
            assert_eq!(report.format, Some(format));
            assert_eq!(report.entries, 4);
            assert_eq!(got, want);
        }
        let zip = raw_zip(&[
            ("app/", b"", 0o755),
            ("app/run.sh", b"echo hi", 0o755),
            ("app/current", b"run.sh", 0o120777),
        ]);
        let (report, got) = run(&zip).unwrap();
        assert_eq!(report.format, Some(Format::Zip));
        assert_eq!(got, want[..3].to_vec());
    }

    #[test]
    fn escaping_paths_refuse_the_whole_archive() {
        let cases: [(&[Raw], &str); 6] = [
            (&[Raw::File("ok", b"1"), Raw::File("../escape", b"x")], "'..'"),
            (&[Raw::File("a/../../escape", b"x")], "'..'"),
            (&[Raw::File("/escape", b"x")], "absolute"),
            (
                &[Raw::Symlink("a", "sub"), Raw::File("a/passwd", b"x")],
                "through the symlink \"a\"",
            ),
            (
                &[Raw::Symlink("a", "/etc"), Raw::File("a/passwd", b"x")],
                "through the symlink \"a\"",
            ),
            (&[Raw::HardLink("h", "/etc/passwd")], "absolute"),
        ];
        for (entries, want) in cases {
            let err = run(&raw_tar(entries)).unwrap_err();
            assert!(matches!(err, ArchiveError::Unsafe { .. }), "{err}");
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
        let err = run(&raw_tar(&[Raw::HardLink("h", "never-made")])).unwrap_err();
        assert!(err.to_string().contains("no earlier entry"), "{err}");
        let err = run(&raw_zip(&[("../../zip-slip", b"x", 0o644)])).unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
    }

    #[test]
    fn escaping_symlinks_and_special_files_are_skipped() {
        let (report, got) = run(&raw_tar(&[
            Raw::Symlink("abs", "/etc"),
            Raw::Symlink("up", "../outside"),
            Raw::Dir("d/"),
            Raw::Symlink("d/up-ok", "../inside"),
            Raw::Symlink("here", "."),
            // `here` is the destination, so `here/..` is its parent: out.
            Raw::Symlink("sneaky", "here/.."),
            Raw::Fifo("pipe"),
            Raw::File("kept", b"k"),
        ]))
        .unwrap();
        let skipped: Vec<&str> = report.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["abs", "up", "sneaky", "pipe"], "{report:?}");
        assert_eq!(
            got,
            pairs(&[
                ("d/", "dir"),
                ("d/up-ok", "symlink:../inside"),
                ("here", "symlink:."),
                ("kept", "file:k"),
            ])
        );
    }

    #[test]
    fn a_global_pax_header_is_metadata_not_a_skipped_entry() {
        let mut b = tar::Builder::new(Vec::new());
        let comment = b"52 comment=0123456789012345678901234567890123456789\n";
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XGlobalHeader);
        h.set_size(comment.len() as u64);
        b.append_data(&mut h, "pax_global_header", &comment[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let (report, got) = run(&b.into_inner().unwrap()).unwrap();
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(got, pairs(&[("f", "file:x")]));
    }

    #[test]
    fn a_truncated_archive_is_corrupt() {
        let mut tar = raw_tar(&[Raw::File("big", &[7u8; 2000])]);
        tar.truncate(1024);
        let err = run(&tar).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
        let err = run(b"PK\x03\x04garbage").unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Corrupt {
                    format: Format::Zip,
                    ..
                }
            ),
            "{err}"
        );
    }
}
