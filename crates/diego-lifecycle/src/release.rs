//! The output of a buildpack's `bin/release`: YAML whose `default_process_types` maps process
//! types to commands. Only that mapping is read, in the block form buildpacks print
//! (`default_process_types:` then `  web: command` lines, values plain or quoted) or the flow
//! form (`default_process_types: {web: command}`); other keys are ignored.

use std::collections::BTreeMap;

/// Why the release output cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bin/release output line {line}: {problem}")]
pub struct ReleaseError {
    pub line: usize,
    pub problem: String,
}

/// The process types and their commands the output declares (empty when it declares none).
pub fn default_process_types(output: &str) -> Result<BTreeMap<String, String>, ReleaseError> {
    let mut types = BTreeMap::new();
    let mut inside = false;
    for (i, raw) in output.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') || raw.trim() == "---" {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        if !indented {
            inside = false;
            if let Some(rest) = raw.strip_prefix("default_process_types:") {
                let rest = rest.trim();
                if rest.is_empty() {
                    inside = true;
                } else if let Some(flow) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    for pair in flow.split(',').filter(|p| !p.trim().is_empty()) {
                        let (k, v) = entry(pair, line)?;
                        types.insert(k, v);
                    }
                } else if rest != "{}" && rest != "~" && rest != "null" {
                    return Err(ReleaseError {
                        line,
                        problem: format!("default_process_types is {rest:?}, not a mapping"),
                    });
                }
            }
            continue;
        }
        if inside {
            let (k, v) = entry(raw, line)?;
            types.insert(k, v);
        }
    }
    Ok(types)
}

/// `name: value`, the value unquoted.
fn entry(raw: &str, line: usize) -> Result<(String, String), ReleaseError> {
    let Some((k, v)) = raw.split_once(':') else {
        return Err(ReleaseError {
            line,
            problem: format!("{:?} is not `type: command`", raw.trim()),
        });
    };
    let (k, v) = (unquote(k.trim()), unquote(v.trim()));
    if k.is_empty() || v.is_empty() {
        return Err(ReleaseError {
            line,
            problem: format!("{:?} is not `type: command`", raw.trim()),
        });
    }
    Ok((k, v))
}

fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            let inner = &s[1..s.len() - 1];
            return if q == '\'' {
                inner.replace("''", "'")
            } else {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            };
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_block_and_flow_forms_are_read() {
        let table: [(&str, BTreeMap<String, String>); 6] = [
            ("---\ndefault_process_types:\n  web: python3 app.py\n", types(&[("web", "python3 app.py")])),
            (
                "addons: []\ndefault_process_types:\n  web: 'node server.js'\n  worker: \"./w \\\"x\\\"\"\nconfig_vars: {}\n  ignored: here\n",
                types(&[("web", "node server.js"), ("worker", "./w \"x\"")]),
            ),
            ("default_process_types: {web: ./serve, worker: ./w}", types(&[("web", "./serve"), ("worker", "./w")])),
            ("default_process_types: {}", types(&[])),
            ("other: thing\n", types(&[])),
            ("", types(&[])),
        ];
        for (output, want) in table {
            assert_eq!(default_process_types(output).unwrap(), want, "{output:?}");
        }
    }

    #[test]
    fn what_is_not_a_mapping_is_named() {
        let e = default_process_types("default_process_types: web").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.problem.contains("not a mapping"), "{e}");
        let e = default_process_types("default_process_types:\n  web\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("not `type: command`"), "{e}");
    }
}
