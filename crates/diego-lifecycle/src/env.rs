//! The environment an app instance runs with, in two parts:
//!
//! - [`lrp_env`], the same for every instance, set on the desired LRP by whoever desires it
//!   (the apps service): `PORT`, `MEMORY_LIMIT`, `VCAP_APPLICATION` and the user's variables,
//!   which may not take a platform name ([`check_user_env`] says so when the app is set, not
//!   when it starts).
//! - The instance's own, known only on its cell: the rep sets `INSTANCE_INDEX`,
//!   `INSTANCE_GUID`, `CF_INSTANCE_INDEX`, `CF_INSTANCE_GUID`, and the executor
//!   `CF_INSTANCE_IP`, `CF_INSTANCE_PORT` (the host port), `CF_INSTANCE_ADDR`,
//!   `CF_INSTANCE_PORTS`. The launcher completes `VCAP_APPLICATION` with them
//!   ([`complete_vcap_application`]), as Cloud Foundry's does.

use serde::Serialize;

/// What the platform knows about the app whose LRP it desires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub guid: String,
    pub name: String,
    /// The port the app must listen on, inside its container.
    pub port: u16,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The hostnames routed to the app.
    pub uris: Vec<String>,
}

/// Names the platform sets: a user's variable may not take one.
const RESERVED: [&str; 5] = [
    "PORT",
    "MEMORY_LIMIT",
    "INSTANCE_INDEX",
    "INSTANCE_GUID",
    "VCAP_APPLICATION",
];
const RESERVED_PREFIXES: [&str; 2] = ["CF_INSTANCE_", "VCAP_"];

/// Why a user's variable is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("env {name:?}: {problem}")]
pub struct EnvError {
    pub name: String,
    pub problem: String,
}

/// Checks the user's variables: names are `[A-Za-z_][A-Za-z0-9_]*`, not one the platform
/// sets, each once; values have no NUL.
pub fn check_user_env(env: &[(String, String)]) -> Result<(), EnvError> {
    let mut seen = std::collections::HashSet::new();
    for (name, value) in env {
        let fail = |problem: String| EnvError {
            name: name.clone(),
            problem,
        };
        let mut bytes = name.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(fail(
                "a name is letters, digits and `_`, not starting with a digit".into(),
            ));
        }
        if RESERVED.contains(&name.as_str()) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(fail(format!(
                "is set by the platform (reserved: {}, and names starting {})",
                RESERVED.join(", "),
                RESERVED_PREFIXES.join(" or ")
            )));
        }
        if value.contains('\0') {
            return Err(fail("a value may not contain a NUL byte".into()));
        }
        if !seen.insert(name.as_str()) {
            return Err(fail("is given twice".into()));
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct VcapApplication<'a> {
    application_id: &'a str,
    application_name: &'a str,
    application_uris: &'a [String],
    name: &'a str,
    uris: &'a [String],
    port: u16,
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    mem: u64,
    disk: u64,
}

/// The desired LRP's environment: the platform's variables, then the user's (which
/// [`check_user_env`] has kept off the platform's names).
pub fn lrp_env(app: &App, user: &[(String, String)]) -> Vec<(String, String)> {
    let vcap = VcapApplication {
        application_id: &app.guid,
        application_name: &app.name,
        application_uris: &app.uris,
        name: &app.name,
        uris: &app.uris,
        port: app.port,
        limits: Limits {
            mem: app.memory_mb,
            disk: app.disk_mb,
        },
    };
    let mut env = vec![
        ("PORT".to_string(), app.port.to_string()),
        ("MEMORY_LIMIT".to_string(), format!("{}m", app.memory_mb)),
        (
            "VCAP_APPLICATION".to_string(),
            serde_json::to_string(&vcap).expect("plain fields serialize"),
        ),
    ];
    env.extend(user.iter().cloned());
    env
}

/// `VCAP_APPLICATION` with the instance's `instance_index`, `instance_id` and `host` added
/// from the cell's variables (`CF_INSTANCE_INDEX`, `CF_INSTANCE_GUID`, `CF_INSTANCE_IP`,
/// read through `var`). A value that is not a JSON object is left as it is: the launcher
/// does not stop an app over it.
pub fn complete_vcap_application(vcap: &str, var: impl Fn(&str) -> Option<String>) -> String {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(vcap) else {
        return vcap.to_string();
    };
    if let Some(index) = var("CF_INSTANCE_INDEX").and_then(|i| i.parse::<u64>().ok()) {
        map.insert("instance_index".into(), index.into());
    }
    if let Some(guid) = var("CF_INSTANCE_GUID") {
        map.insert("instance_id".into(), guid.into());
    }
    if let Some(ip) = var("CF_INSTANCE_IP") {
        map.insert("host".into(), ip.into());
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_lrp_env_describes_the_app_and_the_launcher_adds_the_instance() {
        let app = App {
            guid: "g1".into(),
            name: "myapp".into(),
            port: 8080,
            memory_mb: 256,
            disk_mb: 1024,
            uris: vec!["myapp.diego.localhost".into()],
        };
        let env = lrp_env(&app, &[pair("GREETING", "hi")]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PORT").as_deref(), Some("8080"));
        assert_eq!(get("MEMORY_LIMIT").as_deref(), Some("256m"));
        assert_eq!(env.last(), Some(&pair("GREETING", "hi")));
        let vcap = get("VCAP_APPLICATION").unwrap();
        let v: serde_json::Value = serde_json::from_str(&vcap).unwrap();
        assert_eq!(v["application_name"], "myapp");
        assert_eq!(v["uris"][0], "myapp.diego.localhost");
        assert_eq!(v["limits"]["mem"], 256);
        assert!(v.get("instance_index").is_none(), "only the cell knows it");

        let cell = |k: &str| match k {
            "CF_INSTANCE_INDEX" => Some("2".to_string()),
            "CF_INSTANCE_GUID" => Some("i-2".to_string()),
            "CF_INSTANCE_IP" => Some("10.0.0.7".to_string()),
            _ => None,
        };
        let v: serde_json::Value = serde_json::from_str(&complete_vcap_application(&vcap, cell)).unwrap();
        assert_eq!(v["instance_index"], 2);
        assert_eq!(v["instance_id"], "i-2");
        assert_eq!(v["host"], "10.0.0.7");
        assert_eq!(v["application_name"], "myapp", "the app's fields stay");
        assert_eq!(complete_vcap_application("not json", cell), "not json");
    }

    #[test]
    fn user_variables_that_are_not_allowed_are_named_with_why() {
        assert_eq!(check_user_env(&[pair("A_1", "x"), pair("_b", "")]), Ok(()));
        let table = [
            (vec![pair("PORT", "1")], "PORT", "set by the platform"),
            (
                vec![pair("VCAP_SERVICES", "{}")],
                "VCAP_SERVICES",
                "set by the platform",
            ),
            (
                vec![pair("CF_INSTANCE_IP", "x")],
                "CF_INSTANCE_IP",
                "set by the platform",
            ),
            (vec![pair("1A", "x")], "1A", "not starting with a digit"),
            (vec![pair("A-B", "x")], "A-B", "letters, digits and `_`"),
            (vec![pair("", "x")], "", "letters, digits"),
            (vec![pair("A", "x\0y")], "A", "NUL"),
            (vec![pair("A", "1"), pair("A", "2")], "A", "given twice"),
        ];
        for (env, name, problem) in table {
            let e = check_user_env(&env).unwrap_err();
            assert_eq!(e.name, name, "{env:?}");
            assert!(e.to_string().contains(problem), "{env:?}: {e}");
        }
    }
}
