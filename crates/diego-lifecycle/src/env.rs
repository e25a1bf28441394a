//! The environment an app instance runs with: the platform's variables (`PORT`,
//! `INSTANCE_INDEX`, `CF_INSTANCE_*`, `VCAP_APPLICATION`, `MEMORY_LIMIT`) and the user's, which
//! may not take a platform name ([`check_user_env`] says so when the app is set, not when it
//! starts).

use serde::Serialize;

/// What the platform knows about the instance it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub app_guid: String,
    pub app_name: String,
    pub instance_guid: String,
    pub index: u32,
    /// The port the app must listen on, inside its container.
    pub port: u16,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The hostnames routed to the app.
    pub uris: Vec<String>,
}

/// Names the platform sets: a user's variable may not take one.
const RESERVED: [&str; 4] = ["PORT", "INSTANCE_INDEX", "MEMORY_LIMIT", "VCAP_APPLICATION"];
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
    instance_id: &'a str,
    instance_index: u32,
    port: u16,
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    mem: u64,
    disk: u64,
}

/// The instance's whole environment, the platform's variables first, then the user's (which
/// [`check_user_env`] has kept off the platform's names).
pub fn app_env(instance: &Instance, user: &[(String, String)]) -> Vec<(String, String)> {
    let vcap = VcapApplication {
        application_id: &instance.app_guid,
        application_name: &instance.app_name,
        application_uris: &instance.uris,
        name: &instance.app_name,
        uris: &instance.uris,
        instance_id: &instance.instance_guid,
        instance_index: instance.index,
        port: instance.port,
        limits: Limits {
            mem: instance.memory_mb,
            disk: instance.disk_mb,
        },
    };
    let mut env = vec![
        ("PORT".to_string(), instance.port.to_string()),
        ("INSTANCE_INDEX".to_string(), instance.index.to_string()),
        ("CF_INSTANCE_INDEX".to_string(), instance.index.to_string()),
        ("CF_INSTANCE_GUID".to_string(), instance.instance_guid.clone()),
        ("CF_INSTANCE_PORT".to_string(), instance.port.to_string()),
        ("MEMORY_LIMIT".to_string(), format!("{}m", instance.memory_mb)),
        (
            "VCAP_APPLICATION".to_string(),
            serde_json::to_string(&vcap).expect("plain fields serialize"),
        ),
    ];
    env.extend(user.iter().cloned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_platform_variables_describe_the_instance_and_the_user_ones_follow() {
        let instance = Instance {
            app_guid: "g1".into(),
            app_name: "myapp".into(),
            instance_guid: "i-2".into(),
            index: 2,
            port: 8080,
            memory_mb: 256,
            disk_mb: 1024,
            uris: vec!["myapp.diego.localhost".into()],
        };
        let env = app_env(&instance, &[pair("GREETING", "hi")]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PORT"), Some("8080"));
        assert_eq!(get("INSTANCE_INDEX"), Some("2"));
        assert_eq!(get("CF_INSTANCE_GUID"), Some("i-2"));
        assert_eq!(get("MEMORY_LIMIT"), Some("256m"));
        assert_eq!(env.last(), Some(&pair("GREETING", "hi")));
        let vcap: serde_json::Value = serde_json::from_str(get("VCAP_APPLICATION").unwrap()).unwrap();
        assert_eq!(vcap["application_name"], "myapp");
        assert_eq!(vcap["instance_index"], 2);
        assert_eq!(vcap["uris"][0], "myapp.diego.localhost");
        assert_eq!(vcap["limits"]["mem"], 256);
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
