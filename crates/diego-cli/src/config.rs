//! Role configuration files: `diego ROLE --config FILE` and `diego ROLE --print-config`.
//!
//! A role's file is flat TOML whose keys are the role's long flag names (`listen`,
//! `data-dir`, `event-retention`, and the global `bbs`, `logs`, `output`), so a flag's help is
//! its key's documentation. Precedence: command line > environment variable > file > the
//! flag's built-in default.
//!
//! How: a forgiving first parse finds the role, its `--config` and the flags the command line
//! or the environment already set; the file's other keys are added to the command line as
//! `--key=value` and clap parses the whole as if typed, so every value goes through the flag's
//! own parser and relations (required, conflicts) hold as for typed flags. Each value is
//! checked first (type, then that parser) so a refusal names the file, line, column and key
//! instead of a flag the user never typed. docs/150-configuration.md
//! describes the behaviour for operators.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory as _, FromArgMatches as _};
use toml::Spanned;

use crate::Cli;

/// `--config` and `--print-config`, flattened into every role's arguments. The roles read
/// neither field: [`parse_cli`] has applied the file before the role's arguments exist.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A TOML file of this role's settings: each key is one of the role's long flag names
    /// (see --print-config). A flag on the command line or its environment variable beats
    /// the file; the file beats the built-in default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print every key a config file of this role takes, with its default and help, as
    /// commented TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The arg ids of [`ConfigArgs`]: not keys of a file.
const CONFIG_ID: &str = "config";
const PRINT_CONFIG_ID: &str = "print_config";

/// Parses the `diego` command line with the role's config file (if `--config` names one)
/// applied. `Err` is the exit code of an invocation that is over: `--print-config` printed,
/// or a bad file reported (2, as a usage error). A clap usage error exits as clap does (2).
pub fn parse_cli(argv: impl IntoIterator<Item = OsString>) -> Result<Cli, ExitCode> {
    let cmd = Cli::command();
    let (argv, file) = match merge(&cmd, argv.into_iter().collect(), load) {
        Ok(Merged::Argv { argv, file }) => (argv, file),
        Ok(Merged::Example(text)) => {
            print!("{text}");
            return Err(ExitCode::SUCCESS);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let matches = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| {
        // clap names flags; one may have come from the file (a conflict, a missing value).
        if let Some(file) = file.filter(|_| e.use_stderr()) {
            let _ = e.print();
            eprintln!("note: the command line included the settings of {file}");
            std::process::exit(e.exit_code());
        }
        e.exit()
    });
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// What [`merge`] made of a command line.
#[derive(Debug)]
pub enum Merged {
    /// The command line to parse: the given one, plus the settings of the config file
    /// `file` (as the user named it) if there is one.
    Argv {
        argv: Vec<OsString>,
        file: Option<String>,
    },
    /// `--print-config` was given: the text to print.
    Example(String),
}

/// Adds to `argv` the settings of the role's config file (read by `read`) that neither the
/// command line nor an environment variable gives, as `--key=value` after the user's own
/// arguments: clap then parses them as if typed, through each flag's own parser and with its
/// relations (required, conflicts) intact. Roles take no positional arguments, so the end of
/// the command line is a place only flags can be.
pub fn merge(
    cmd: &Command,
    argv: Vec<OsString>,
    read: impl FnOnce(&PathBuf) -> Result<(String, String), ConfigError>,
) -> Result<Merged, ConfigError> {
    // A forgiving first pass finds the role, its --config/--print-config, and which flags the
    // command line and environment already give; the real parse may need required flags that
    // only the file gives. Help and version come back as errors here, and the real parse
    // prints them.
    let Ok(probe) = cmd.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok(Merged::Argv { argv, file: None });
    };
    let (path, role) = role_matches(&probe);
    if path.is_empty() || !has_config_args(cmd, &path) {
        return Ok(Merged::Argv { argv, file: None });
    }
    if role.try_get_one::<bool>(PRINT_CONFIG_ID).ok().flatten() == Some(&true) {
        return Ok(Merged::Example(example(cmd, &path)));
    }
    let Some(file) = role.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten() else {
        return Ok(Merged::Argv { argv, file: None });
    };
    let (shown, text) = read(file)?;
    let given = |id: &str| {
        matches!(
            role.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let mut argv = argv;
    argv.extend(file_args(cmd, &path, &text, &shown, &given)?);
    Ok(Merged::Argv {
        argv,
        file: Some(shown),
    })
}

/// The subcommand path of the deepest subcommand and its matches.
fn role_matches(matches: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut path = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        path.push(name.to_string());
        at = sub;
    }
    (path, at)
}

/// Whether the command at `path` has the [`ConfigArgs`] flags (is a role).
fn has_config_args(cmd: &Command, path: &[String]) -> bool {
    find(cmd, path).is_some_and(|c| c.get_arguments().any(|a| a.get_id() == CONFIG_ID))
}

fn find<'c>(cmd: &'c Command, path: &[String]) -> Option<&'c Command> {
    path.iter().try_fold(cmd, |c, name| c.find_subcommand(name))
}

/// A config file that cannot be used: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line and column, when the problem has a place in the file.
    pub at: Option<(usize, usize)>,
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, column)) = self.at {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "key {key:?}: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn load(path: &PathBuf) -> Result<(String, String), ConfigError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((shown, text)),
        Err(e) => Err(ConfigError {
            file: shown,
            at: None,
            key: None,
            problem: format!("cannot read the config file: {e}"),
        }),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One `key = value` of a file, with the key's place.
struct Entry {
    key: String,
    key_span: Range<usize>,
    value: toml::Value,
}

fn parse_entries(text: &str, file: &str) -> Result<Vec<Entry>, ConfigError> {
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            at: e.span().map(|s| line_column(text, s.start)),
            key: None,
            problem: format!("not valid TOML: {}", e.message().trim_end()),
        })?;
    let mut entries: Vec<Entry> = table
        .into_iter()
        .map(|(key, value)| Entry {
            key_span: key.span(),
            key: key.into_inner(),
            value: value.into_inner(),
        })
        .collect();
    // Report problems in the order the file has them.
    entries.sort_by_key(|e| e.key_span.start);
    Ok(entries)
}

/// What a flag takes, decided from its action and value parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `--memory`: true or false.
    Flag,
    /// A value; `repeated` when the flag may be given more than once (an array in a file).
    Value { number: bool, repeated: bool },
}

fn shape(arg: &Arg) -> Shape {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => Shape::Flag,
        action => Shape::Value {
            number: is_number(arg),
            repeated: matches!(action, ArgAction::Append),
        },
    }
}

fn is_number(arg: &Arg) -> bool {
    let id = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .iter()
    .any(|t| id == *t)
}

/// The flag's value(s) as command-line text, or what is wrong with the TOML type.
fn texts(shape: Shape, value: &toml::Value) -> Result<Vec<String>, String> {
    let one = |v: &toml::Value, number: bool| match (v, number) {
        (toml::Value::Integer(n), true) => Ok(n.to_string()),
        (toml::Value::Float(x), true) => Ok(x.to_string()),
        (toml::Value::String(s), false) => Ok(s.clone()),
        (other, true) => Err(format!("expected a number, got {}", describe(other))),
        (other, false) => Err(format!("expected a string, got {}", describe(other))),
    };
    match (shape, value) {
        (Shape::Flag, toml::Value::Boolean(b)) => Ok(vec![b.to_string()]),
        (Shape::Flag, other) => Err(format!("expected true or false, got {}", describe(other))),
        (Shape::Value { .. }, toml::Value::Table(_)) => {
            Err("expected a value, got a table (a role's keys are flat: `key = value`)".to_string())
        }
        (
            Shape::Value {
                number,
                repeated: true,
            },
            toml::Value::Array(items),
        ) => items.iter().map(|v| one(v, number)).collect(),
        (Shape::Value { repeated: false, .. }, toml::Value::Array(_)) => {
            Err("expected a single value, got an array (this flag is not repeatable)".to_string())
        }
        (Shape::Value { number, .. }, v) => one(v, number).map(|t| vec![t]),
    }
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(n) => format!("the number {n}"),
        toml::Value::Float(x) => format!("the number {x}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date-time {d}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

/// Runs `text` through `arg`'s own value parser (in a command of that one flag, so the
/// flag's relations to others play no part), returning why it is refused.
fn check_value(arg: &Arg, long: &str, text: &str) -> Result<(), String> {
    let probe = Command::new("diego").no_binary_name(true).arg(
        Arg::new("value")
            .long(long.to_string())
            .action(ArgAction::Set)
            .value_parser(arg.get_value_parser().clone()),
    );
    match probe.try_get_matches_from([format!("--{long}={text}")]) {
        Ok(_) => Ok(()),
        Err(e) => Err(refusal(&e, text)),
    }
}

/// `invalid value "ten": invalid digit found in string`, from a value parser's clap error.
fn refusal(e: &clap::Error, text: &str) -> String {
    let reason = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) => format!("expected one of {}", valid.join(", ")),
        _ => match std::error::Error::source(e) {
            Some(source) => source.to_string(),
            None => e.kind().to_string(),
        },
    };
    format!("invalid value {text:?}: {reason}")
}

/// The command-line arguments that the file `text` gives the role at `path`, leaving out
/// each flag `given(id)` says the command line or environment already sets.
fn file_args(
    cmd: &Command,
    path: &[String],
    text: &str,
    file: &str,
    given: &dyn Fn(&str) -> bool,
) -> Result<Vec<OsString>, ConfigError> {
    let entries = parse_entries(text, file)?;
    let mut built = cmd.clone();
    built.build();
    let role = find(&built, path).expect("the role's path comes from parsing this command");
    let role_name = format!("diego {}", path.join(" "));
    let mut args = Vec::new();
    for entry in entries {
        let fail = |problem: String| ConfigError {
            file: file.to_string(),
            at: Some(line_column(text, entry.key_span.start)),
            key: Some(entry.key.clone()),
            problem,
        };
        let arg = role
            .get_arguments()
            .filter(|a| a.get_id() != CONFIG_ID && a.get_id() != PRINT_CONFIG_ID)
            .find(|a| a.get_long() == Some(entry.key.as_str()) && !is_help_or_version(a))
            .ok_or_else(|| {
                fail(format!(
                    "unknown key: {role_name} has no flag --{}; `{role_name} --print-config` lists the keys",
                    entry.key
                ))
            })?;
        let shape = shape(arg);
        let values = texts(shape, &entry.value).map_err(&fail)?;
        if let Shape::Value { .. } = shape {
            for value in &values {
                check_value(arg, &entry.key, value).map_err(&fail)?;
            }
        }
        if given(arg.get_id().as_str()) {
            continue;
        }
        let long = &entry.key;
        match shape {
            Shape::Flag => {
                // Present means true for SetTrue and false for SetFalse.
                let present_means = matches!(arg.get_action(), ArgAction::SetTrue);
                if values.first().map(String::as_str) == Some(if present_means { "true" } else { "false" }) {
                    args.push(OsString::from(format!("--{long}")));
                }
            }
            Shape::Value { .. } => {
                args.extend(values.iter().map(|v| OsString::from(format!("--{long}={v}"))));
            }
        }
    }
    Ok(args)
}

fn is_help_or_version(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// Every key of the role at `path` as commented TOML: help, environment variable, and the
/// default as the value. Generated from the flags, so it cannot drift from them.
pub fn example(cmd: &Command, path: &[String]) -> String {
    let mut built = cmd.clone();
    built.build();
    let Some(role) = find(&built, path) else {
        return String::new();
    };
    let name = format!("diego {}", path.join(" "));
    let mut out = format!(
        "# Configuration of `{name}` (TOML), for `{name} --config FILE`.\n\
         # Each key is a long flag of `{name}` and means what the flag means. A flag on the\n\
         # command line, then its environment variable, beat the file; the file beats the\n\
         # default shown. Uncomment a key to set it.\n"
    );
    for arg in role.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set()
            || is_help_or_version(arg)
            || arg.get_id() == CONFIG_ID
            || arg.get_id() == PRINT_CONFIG_ID
        {
            continue;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        // clap drops the full stop of a one-line doc comment; a comment is a sentence again.
        let help = match help.trim_end() {
            h if h.is_empty() || h.ends_with(['.', ':']) => h.to_string(),
            h => format!("{h}."),
        };
        for line in help.lines() {
            for wrapped in wrap(line, 92) {
                out.push_str(format!("# {wrapped}").trim_end());
                out.push('\n');
            }
        }
        let shape = shape(arg);
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|p| p.get_name().to_string())
            .collect();
        if !possible.is_empty() && shape != Shape::Flag {
            out.push_str(&format!("# One of: {}.\n", possible.join(", ")));
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# Environment variable: {}.\n", env.to_string_lossy()));
        }
        if arg.is_global_set() {
            out.push_str("# A global flag of `diego`.\n");
        }
        if arg.is_required_set() {
            out.push_str("# Required (here or on the command line).\n");
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let placeholder = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map_or_else(|| long.to_uppercase(), |n| n.to_string());
        let line = match shape {
            Shape::Flag => {
                let on = defaults.first().is_some_and(|d| d == "true");
                format!("# {long} = {on}")
            }
            Shape::Value { number, repeated } => {
                let render = |s: &str| render_value(s, number);
                if defaults.is_empty() {
                    let shown = if number {
                        placeholder.clone()
                    } else {
                        format!("{placeholder:?}")
                    };
                    let shown = if repeated { format!("[{shown}]") } else { shown };
                    format!("# {long} = {shown}  (no default)")
                } else if repeated {
                    let items: Vec<String> = defaults.iter().map(|d| render(d)).collect();
                    format!("# {long} = [{}]", items.join(", "))
                } else {
                    format!("# {long} = {}", render(&defaults[0]))
                }
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `line` cut at spaces into lines of at most `width` characters (a longer word stays whole).
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in line.split(' ') {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines.push(current);
    lines
}

fn render_value(text: &str, number: bool) -> String {
    if number {
        text.to_string()
    } else {
        toml::Value::String(text.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests;
