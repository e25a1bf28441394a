//! A `Procfile`: one process type per line, `name: command`.

use std::collections::BTreeMap;

/// The process types a `Procfile` declares, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Procfile {
    pub processes: BTreeMap<String, String>,
}

/// Why a `Procfile` cannot be used: which line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Procfile line {line}: {problem}")]
pub struct ProcfileError {
    pub line: usize,
    pub problem: String,
}

impl Procfile {
    /// Blank lines and `#` comments are skipped; a name is letters, digits, `_` and `-`; the
    /// command is the rest of the line, trimmed, and must not be empty; a name appears once.
    pub fn parse(text: &str) -> Result<Self, ProcfileError> {
        let mut processes = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let fail = |problem: String| ProcfileError { line, problem };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, command)) = trimmed.split_once(':') else {
                return Err(fail(format!("{trimmed:?} is not `name: command`")));
            };
            let (name, command) = (name.trim(), command.trim());
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(fail(format!(
                    "process type {name:?} must be letters, digits, `_` or `-`"
                )));
            }
            if command.is_empty() {
                return Err(fail(format!("process type {name:?} has no command")));
            }
            if processes.insert(name.to_string(), command.to_string()).is_some() {
                return Err(fail(format!("process type {name:?} is declared twice")));
            }
        }
        Ok(Procfile { processes })
    }

    /// The `web` process's command, if declared.
    pub fn web(&self) -> Option<&str> {
        self.processes.get("web").map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_read_with_comments_and_blank_lines_skipped() {
        let p = Procfile::parse("# the app\nweb: python3 app.py --port $PORT\n\nworker:  ./work: now \n")
            .unwrap();
        assert_eq!(p.web(), Some("python3 app.py --port $PORT"));
        assert_eq!(
            p.processes["worker"], "./work: now",
            "only the first colon separates"
        );
        assert_eq!(Procfile::parse("").unwrap(), Procfile::default());
    }

    #[test]
    fn a_bad_line_is_named_with_what_is_wrong() {
        let table = [
            ("web python3 app.py", 1, "is not `name: command`"),
            ("\nweb:", 2, "process type \"web\" has no command"),
            ("we b: x", 1, "must be letters, digits"),
            (": x", 1, "must be letters, digits"),
            ("web: a\nweb: b", 2, "declared twice"),
        ];
        for (text, line, problem) in table {
            let e = Procfile::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.problem.contains(problem), "{text:?}: {e}");
        }
    }
}
