//! The merge of a file into a command line, as tables, on a small command shaped like a role.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _};

use super::*;

#[derive(Debug, clap::Parser)]
struct Top {
    /// A global flag, as `--bbs` is.
    #[arg(long, global = true, default_value = "g0")]
    global: String,
    #[command(subcommand)]
    sub: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    Role(RoleArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Fast,
    Slow,
}

#[derive(Debug, clap::Args)]
struct RoleArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 10)]
    n: u64,
    #[arg(long)]
    on: bool,
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Required unless --memory, as the BBS's --data-dir is.
    #[arg(long, required_unless_present = "memory", conflicts_with = "memory")]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    memory: bool,
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `file` applied to `role ARGS…`, parsed: what the role would run with.
fn merged(file: &str, args: &[&str]) -> Result<(String, RoleArgs), String> {
    let cmd = Top::command();
    let argv: Vec<OsString> = ["diego", "role", "--config", "f.toml"]
        .iter()
        .chain(args)
        .map(OsString::from)
        .collect();
    let read = |p: &PathBuf| {
        assert_eq!(p, &PathBuf::from("f.toml"));
        Ok(("f.toml".to_string(), file.to_string()))
    };
    let Merged::Argv { argv, .. } = merge(&cmd, argv, read).map_err(|e| e.to_string())? else {
        panic!("not an example")
    };
    let matches = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
    let top = Top::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let Sub::Role(role) = top.sub;
    Ok((top.global, role))
}

#[test]
fn the_command_line_beats_the_file_and_the_file_beats_the_default() {
    // (file, command line, expected listen, n, on, tags, global)
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static str,
        u64,
        bool,
        &'static [&'static str],
        &'static str,
    );
    let rows: &[Row] = &[
        ("memory = true", &[], "127.0.0.1:1", 10, false, &[], "g0"),
        (
            "memory = true\nlisten = \"127.0.0.1:9\"",
            &[],
            "127.0.0.1:9",
            10,
            false,
            &[],
            "g0",
        ),
        (
            "memory = true\nlisten = \"127.0.0.1:9\"",
            &["--listen", "127.0.0.1:7"],
            "127.0.0.1:7",
            10,
            false,
            &[],
            "g0",
        ),
        ("memory = true\nn = 3", &[], "127.0.0.1:1", 3, false, &[], "g0"),
        (
            "memory = true\nn = 3",
            &["--n=4"],
            "127.0.0.1:1",
            4,
            false,
            &[],
            "g0",
        ),
        (
            "memory = true\non = true",
            &[],
            "127.0.0.1:1",
            10,
            true,
            &[],
            "g0",
        ),
        (
            "memory = true\non = false",
            &["--on"],
            "127.0.0.1:1",
            10,
            true,
            &[],
            "g0",
        ),
        (
            "memory = true\ntag = [\"a\", \"b\"]",
            &[],
            "127.0.0.1:1",
            10,
            false,
            &["a", "b"],
            "g0",
        ),
        // A repeated flag on the command line replaces the file's list, as any flag does.
        (
            "memory = true\ntag = [\"a\", \"b\"]",
            &["--tag", "c"],
            "127.0.0.1:1",
            10,
            false,
            &["c"],
            "g0",
        ),
        (
            "memory = true\ntag = \"one\"",
            &[],
            "127.0.0.1:1",
            10,
            false,
            &["one"],
            "g0",
        ),
        (
            "memory = true\nglobal = \"g1\"",
            &[],
            "127.0.0.1:1",
            10,
            false,
            &[],
            "g1",
        ),
        (
            "memory = true\nglobal = \"g1\"",
            &["--global", "g2"],
            "127.0.0.1:1",
            10,
            false,
            &[],
            "g2",
        ),
    ];
    for (file, args, listen, n, on, tags, global) in rows {
        let (got_global, role) = merged(file, args).unwrap_or_else(|e| panic!("{file:?} {args:?}: {e}"));
        let case = format!("file {file:?}, args {args:?}");
        assert_eq!(role.listen.to_string(), *listen, "{case}");
        assert_eq!(role.n, *n, "{case}");
        assert_eq!(role.on, *on, "{case}");
        assert_eq!(role.tags, *tags, "{case}");
        assert_eq!(got_global, *global, "{case}");
    }
}

#[test]
fn a_required_flag_may_come_from_the_file_or_the_command_line() {
    let (_, role) = merged("data-dir = \"/d\"", &[]).unwrap();
    assert_eq!(role.data_dir, Some(PathBuf::from("/d")));
    let (_, role) = merged("data-dir = \"/d\"", &["--data-dir", "/e"]).unwrap();
    assert_eq!(role.data_dir, Some(PathBuf::from("/e")));
    let (_, role) = merged("mode = \"slow\"", &["--data-dir", "/e"]).unwrap();
    assert_eq!(role.mode, Some(Mode::Slow));
    let missing = merged("n = 1", &[]).unwrap_err();
    assert!(missing.contains("--data-dir"), "{missing}");
}

#[test]
fn a_bad_file_is_refused_naming_line_column_and_key() {
    let rows: &[(&str, &str)] = &[
        (
            "memory = true\nlistne = \"x\"",
            "f.toml:2:1: key \"listne\": unknown key: diego role has no flag --listne",
        ),
        (
            "memory = true\n\nn = \"ten\"",
            "f.toml:3:1: key \"n\": expected a number, got the string \"ten\"",
        ),
        (
            "memory = true\nn = -1",
            "f.toml:2:1: key \"n\": invalid value \"-1\": ",
        ),
        (
            "  listen = \"nowhere\"",
            "f.toml:1:3: key \"listen\": invalid value \"nowhere\": invalid socket address syntax",
        ),
        (
            "listen = 8889",
            "f.toml:1:1: key \"listen\": expected a string, got the number 8889",
        ),
        (
            "on = \"yes\"",
            "f.toml:1:1: key \"on\": expected true or false, got the string \"yes\"",
        ),
        (
            "mode = \"quick\"",
            "f.toml:1:1: key \"mode\": invalid value \"quick\": expected one of fast, slow",
        ),
        (
            "listen = [\"127.0.0.1:1\"]",
            "f.toml:1:1: key \"listen\": expected a single value, got an array",
        ),
        (
            "tag = [\"a\", 2]",
            "f.toml:1:1: key \"tag\": expected a string, got the number 2",
        ),
        ("[role]\nn = 1", "f.toml:1:2: key \"role\": unknown key"),
        (
            "config = \"other.toml\"",
            "f.toml:1:1: key \"config\": unknown key",
        ),
        ("help = true", "f.toml:1:1: key \"help\": unknown key"),
        ("n = 1\nn = 2", "f.toml:2:1: not valid TOML: duplicate key"),
        ("n = = 1", "f.toml:1:5: not valid TOML: "),
    ];
    for (file, expected) in rows {
        let err = merged(file, &[])
            .err()
            .unwrap_or_else(|| panic!("{file:?} was accepted"));
        assert!(
            err.starts_with(expected),
            "file {file:?}:\n got  {err}\n want {expected}…"
        );
    }
}

#[test]
fn line_column_counts_lines_and_characters() {
    for (text, offset, expected) in [
        ("abc", 0, (1, 1)),
        ("abc", 2, (1, 3)),
        ("a\nbc", 2, (2, 1)),
        ("a\nbc", 3, (2, 2)),
        ("é\nxé=", 6, (2, 3)),
    ] {
        assert_eq!(line_column(text, offset), expected, "{text:?} at {offset}");
    }
}

#[test]
fn the_example_lists_every_key_with_its_default_and_parses_back() {
    let text = example(&Top::command(), &["role".to_string()]);
    for line in [
        "# Address to listen on.",
        "# listen = \"127.0.0.1:1\"",
        "# n = 10",
        "# on = false",
        "# tag = [\"TAGS\"]  (no default)",
        "# One of: fast, slow.",
        "# global = \"g0\"",
        "# A global flag of `diego`.",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("config ="), "{text}");
    assert!(!text.contains("help ="), "{text}");
    // Uncommented, the keys that have defaults make a file the role accepts.
    let uncommented: String = text
        .lines()
        .filter(|l| l.starts_with("# ") && l.contains(" = ") && !l.contains("(no default)"))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    let (global, role) = merged(&uncommented, &["--memory"]).unwrap();
    assert_eq!((global.as_str(), role.n), ("g0", 10));
}

#[test]
fn print_config_needs_no_required_flag_and_other_commands_are_left_alone() {
    let cmd = Top::command();
    let argv = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
    let unread = |_: &PathBuf| -> Result<(String, String), ConfigError> { panic!("no file to read") };
    match merge(&cmd, argv(&["diego", "role", "--print-config"]), unread) {
        Ok(Merged::Example(text)) => assert!(text.contains("# n = 10"), "{text}"),
        other => panic!("{other:?}"),
    }
    let plain = argv(&["diego", "role", "--memory"]);
    match merge(&cmd, plain.clone(), unread) {
        Ok(Merged::Argv { argv, file: None }) => assert_eq!(argv, plain),
        other => panic!("{other:?}"),
    }
}

/// The real `diego auctioneer` with `file` applied: the BBS list it would use.
fn auctioneer_bbs(file: &str, env_free_args: &[&str]) -> Result<String, String> {
    let cmd = crate::Cli::command();
    let argv: Vec<OsString> = ["diego", "auctioneer", "--config", "f.toml"]
        .iter()
        .chain(env_free_args)
        .map(OsString::from)
        .collect();
    let read = |_: &PathBuf| Ok(("f.toml".to_string(), file.to_string()));
    let Merged::Argv { argv, .. } = merge(&cmd, argv, read).map_err(|e| e.to_string())? else {
        panic!("not an example")
    };
    let matches = cmd.try_get_matches_from(argv).map_err(|e| e.to_string())?;
    let cli = crate::Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    cli.bbs_urls().map(|u| u.to_string()).map_err(|e| e.to_string())
}

#[test]
fn the_bbs_key_takes_an_array_or_a_comma_separated_string() {
    if std::env::var_os("DIEGO_BBS_URL").is_some() {
        println!("SKIPPED the_bbs_key_takes_an_array_or_a_comma_separated_string: DIEGO_BBS_URL is set");
        return;
    }
    let both = "http://10.0.0.1:8889,http://10.0.0.2:8889";
    let cases: &[(&str, &[&str], Result<&str, &str>)] = &[
        ("", &[], Ok("http://127.0.0.1:8889")),
        (
            r#"bbs = ["http://10.0.0.1:8889", "http://10.0.0.2:8889"]"#,
            &[],
            Ok(both),
        ),
        (
            r#"bbs = "http://10.0.0.1:8889,http://10.0.0.2:8889""#,
            &[],
            Ok(both),
        ),
        ("", &["--bbs", both], Ok(both)),
        (
            "",
            &["--bbs", "http://10.0.0.1:8889", "--bbs", "http://10.0.0.2:8889"],
            Ok(both),
        ),
        (
            r#"bbs = ["http://x:1"]"#,
            &["--bbs", "http://y:2"],
            Ok("http://y:2"),
        ),
        (
            r#"bbs = ["http://10.0.0.1:8889", "10.0.0.2:8889"]"#,
            &[],
            Err(r#"f.toml:1:1: key "bbs": invalid value "10.0.0.2:8889": BBS URL "10.0.0.2:8889""#),
        ),
        (
            "",
            &["--bbs", "http://a:1,ftp://b:2"],
            Err(r#"BBS URL "ftp://b:2": the scheme must be http"#),
        ),
        (
            "",
            &["--bbs", "http://a:1", "--bbs", "http://a:1"],
            Err(r#"BBS URL "http://a:1" is listed twice"#),
        ),
    ];
    for (file, args, want) in cases {
        let got = auctioneer_bbs(file, args);
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "{file} {args:?}"),
            (Err(w), Err(g)) => assert!(g.contains(w), "{file} {args:?}: {g}"),
            _ => panic!("{file} {args:?}: expected {want:?}, got {got:?}"),
        }
    }
}
