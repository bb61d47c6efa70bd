//! Conformance with the official OpenAPI specs (`../shared/specs/azure-devops/`): every response shape the
//! emulator produces validates against the spec's JSON schemas (with the `jsonschema` crate), and the
//! specs' `httpExamples` requests are accepted.
//!
//! Swagger 2.0 → JSON Schema translation used here (documented in docs/emulator.md):
//! - `$ref` resolves to `#/definitions/…` of a document built from the spec's definitions;
//! - properties may be `null` (Swagger 2.0 cannot say so; Azure's generators treat optional properties as
//!   nullable, and the spec's own examples return `"targetAccounts": null`, `"token": null`);
//! - a bare `{"type": "object"}` is .NET `object`, i.e. any JSON value (the spec's audit example puts an
//!   array in `data`);
//! - objects with declared properties get `additionalProperties: false`, so an undeclared field fails
//!   (e.g. `patTokenErrorMessage` in a 7.1 response);
//! - `format` is validated (`uuid`, `date-time`).

use crate::support::*;
use jsonschema::Validator;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// Microsoft's Azure DevOps specs, from `../shared/specs` (or `PATROL_SPECS_DIR`; never in the repository).
fn specs() -> PathBuf {
    patrol_emulator::specs::spec_path("azure-devops")
}

/// A spec or example file (Microsoft's files start with a UTF-8 BOM; the helper removes it).
fn load(rel: &str) -> Value {
    patrol_emulator::specs::spec_json(&format!("azure-devops/{rel}"))
}

fn transform(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let bare_object = m.get("type") == Some(&json!("object"))
                && !m.contains_key("properties")
                && !m.contains_key("additionalProperties")
                && !m.contains_key("$ref");
            if bare_object {
                return json!({});
            }
            let mut out = Map::new();
            for (k, val) in m {
                if k.starts_with("x-ms") {
                    continue;
                }
                if k == "properties" {
                    let props: Map<String, Value> = val
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(name, s)| (name.clone(), json!({ "anyOf": [{ "type": "null" }, transform(s)] })))
                        .collect();
                    out.insert(k.clone(), Value::Object(props));
                    out.insert("additionalProperties".into(), json!(false));
                } else {
                    out.insert(k.clone(), transform(val));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(transform).collect()),
        other => other.clone(),
    }
}

fn validator(spec: &Value, root: Value) -> Validator {
    let mut doc = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "definitions": transform(&spec["definitions"]),
    });
    for (k, v) in root.as_object().unwrap() {
        doc[k] = v.clone();
    }
    jsonschema::options().should_validate_formats(true).build(&doc).unwrap()
}

fn def(spec: &Value, name: &str) -> Validator {
    assert!(spec["definitions"].get(name).is_some(), "{name} is not defined in the spec");
    validator(spec, json!({ "$ref": format!("#/definitions/{name}") }))
}

fn array_of(spec: &Value, name: &str) -> Validator {
    validator(spec, json!({ "type": "array", "items": { "$ref": format!("#/definitions/{name}") } }))
}

#[track_caller]
fn assert_valid(v: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{what} does not match the spec: {errors:#?}\n{instance:#}");
}

#[tokio::test]
async fn the_validators_reject_wrong_shapes() {
    let spec = load("tokens/7.2/tokens.json");
    let v = def(&spec, "PatTokenResult");
    assert!(v.is_valid(&json!({ "patToken": null, "patTokenError": "none" })));
    assert!(!v.is_valid(&json!({ "patTokenError": "bogus" })));
    assert!(!v.is_valid(&json!({ "patToken": { "validTo": "tomorrow" }, "patTokenError": "none" })));
    assert!(!v.is_valid(&json!({ "patToken": { "authorizationId": "not-a-uuid" }, "patTokenError": "none" })));
    assert!(!v.is_valid(&json!({ "patToken": { "secret": "x" }, "patTokenError": "none" })));
    let v71 = def(&load("tokens/7.1/tokens.json"), "PatTokenResult");
    assert!(
        !v71.is_valid(&json!({ "patTokenError": "none", "patTokenErrorMessage": null })),
        "7.1 has no message field"
    );
}

async fn call(env: &Env, method: Method, url: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let mut rb = env.http.request(method, url).bearer_auth(token).header("X-TFS-FedAuthRedirect", "Suppress");
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn pat_api_responses_match_the_specs() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    for (dir, version) in [("tokens/7.1/tokens.json", "7.1-preview.1"), ("tokens/7.2/tokens.json", "7.2-preview.1")] {
        let spec = load(dir);
        let result = def(&spec, "PatTokenResult");
        let paged = def(&spec, "PagedPatTokens");
        let base = env.devops(&format!("/fabrikam/_apis/tokens/pats?api-version={version}"));
        let valid_to = patrol_emulator::wire::format_time(env.emu.clock().now() + time::Duration::days(20));
        let mut shapes = Vec::new();
        for (name, scope, all) in
            [("a", "vso.code", false), ("b", "app_token", true), ("c", "vso.work_full vso.analytics", false)]
        {
            let (s, v) = call(
                &env,
                Method::POST,
                &base,
                &t,
                Some(&json!({ "displayName": name, "scope": scope, "validTo": valid_to, "allOrgs": all })),
            )
            .await;
            assert_eq!(s, 200);
            assert_eq!(v["patTokenError"], "none");
            shapes.push(("create", v));
        }
        let id = shapes[0].1["patToken"]["authorizationId"].as_str().unwrap().to_string();
        let (_, refused) = call(
            &env,
            Method::POST,
            &base,
            &t,
            Some(&json!({ "displayName": "", "scope": "vso.code", "validTo": valid_to })),
        )
        .await;
        assert_eq!(refused["patTokenError"], "displayNameRequired");
        shapes.push(("create refused", refused));
        shapes.push(("get", call(&env, Method::GET, &format!("{base}&authorizationId={id}"), &t, None).await.1));
        shapes.push((
            "get unknown",
            call(&env, Method::GET, &format!("{base}&authorizationId={}", uuid::Uuid::new_v4()), &t, None).await.1,
        ));
        shapes.push((
            "update",
            call(&env, Method::PUT, &base, &t, Some(&json!({ "authorizationId": id, "displayName": "a2" }))).await.1,
        ));
        for (what, v) in &shapes {
            assert_valid(&result, v, &format!("{version} {what}"));
        }
        let (s, _) = call(&env, Method::DELETE, &format!("{base}&authorizationId={id}"), &t, None).await;
        assert_eq!(s, 204);
        for q in [
            "",
            "&displayFilterOption=all&$top=2",
            "&displayFilterOption=revoked",
            "&sortByOption=status&isSortAscending=false",
        ] {
            let (s, v) = call(&env, Method::GET, &format!("{base}{q}"), &t, None).await;
            assert_eq!(s, 200);
            assert_valid(&paged, &v, &format!("{version} list {q}"));
        }
    }
}

#[tokio::test]
async fn token_admin_and_audit_responses_match_the_specs() {
    let env = start().await;
    let t = env.pats_token(ALICE).await;
    for i in 0..3 {
        env.create_pat(&t, "fabrikam", &format!("p{i}"), "vso.code", 3).await;
    }
    let admin = env.user_token(ADMIN, &["vso.tokenadministration", "vso.auditlog"]).await;
    let descriptor = env.emu.context().state().user_by_upn(ALICE).unwrap().descriptor();
    let ta = load("tokenAdmin/7.2/tokenAdmin.json");
    let paged = def(&ta, "TokenAdminPagedSessionTokens");
    for q in ["pageSize=2", "pageSize=100"] {
        let url = env.devops(&format!(
            "/fabrikam/_apis/tokenadmin/personalaccesstokens/{descriptor}?{q}&api-version=7.2-preview.1"
        ));
        let (s, v) = call(&env, Method::GET, &url, &admin, None).await;
        assert_eq!(s, 200);
        assert_valid(&paged, &v, q);
    }
    let audit = load("audit/7.2/audit.json");
    let result = def(&audit, "AuditLogQueryResult");
    env.post_ctl("/_control/pats/use", json!({ "token": env.create_pat(&t, "fabrikam", "u", "vso.code", 1).await["patToken"]["token"], "organization": "fabrikam" }))
        .await;
    env.advance(2 * 86_400).await;
    let admin = env.user_token(ADMIN, &["vso.auditlog"]).await;
    for q in ["batchSize=2", "batchSize=1000"] {
        let (s, v) = call(
            &env,
            Method::GET,
            &env.audit_url(&format!("/fabrikam/_apis/audit/auditlog?{q}&api-version=7.2-preview.1")),
            &admin,
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert!(!v["decoratedAuditLogEntries"].as_array().unwrap().is_empty());
        assert_valid(&result, &v, q);
    }
    let (s, v) = call(
        &env,
        Method::GET,
        &env.audit_url("/fabrikam/_apis/audit/actions?areaName=Token&api-version=7.2-preview.1"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_valid(&array_of(&audit, "AuditActionInfo"), &v["value"], "actions");
}

/// The examples name PATs and a user that must exist for the requests to mean anything.
fn example_seed() -> patrol_emulator::seed::Seed {
    let mut s = seed();
    let extra: patrol_emulator::seed::Seed = serde_json::from_value(json!({
        "users": [{ "upn": "example@fabrikam.test", "id": "270b60c3-e8b3-70e5-acd6-c39f97d6fa4a", "organizations": ["fabrikam"] }],
    }))
    .unwrap();
    s.users.extend(extra.users);
    s
}

#[tokio::test]
async fn the_specs_http_examples_are_accepted() {
    let env = start_with(patrol_emulator::EmulatorConfig { seed: Some(example_seed()), ..Default::default() }).await;
    let in_days = |d: i64| patrol_emulator::wire::format_time(env.emu.clock().now() + time::Duration::days(d));
    for id in ["cf42cc9f-f170-4375-92ba-c13d58a6545f", "3d3aca0c-9ad3-4b07-8334-08ec8b1ddc32"] {
        env.post_ctl(
            "/_control/pats",
            json!({ "authorizationId": id, "owner": ALICE, "organization": "fabrikam", "displayName": "example", "scope": "vso.code", "validTo": in_days(30) }),
        )
        .await;
    }
    let pats = env.pats_token(ALICE).await;
    let admin = env.user_token(ADMIN, &["vso.tokenadministration", "vso.auditlog"]).await;

    let replayed = [
        ("tokens/7.2", "7.2-preview.1"),
        ("tokens/7.1", "7.1-preview.1"),
        ("tokenAdmin/7.2", "7.2-preview.1"),
        ("audit/7.2", "7.2-preview.1"),
    ];
    // Audit streams are not emulated (patrol polls `auditlog`).
    let not_emulated = ["streams/"];
    let mut count = 0;
    for (dir, version) in replayed {
        let spec_file = if dir.starts_with("tokens") {
            format!("{dir}/tokens.json")
        } else if dir.starts_with("tokenAdmin") {
            format!("{dir}/tokenAdmin.json")
        } else {
            format!("{dir}/audit.json")
        };
        let spec = load(&spec_file);
        let mut files: Vec<PathBuf> = walk(&specs().join(dir).join("httpExamples"));
        files.sort();
        for f in files {
            let rel = f.strip_prefix(specs()).unwrap().to_string_lossy().to_string();
            if not_emulated.iter().any(|n| rel.contains(n)) {
                continue;
            }
            let ex = load(&rel);
            let method: Method =
                ex.get("x-ms-vss-request-method").and_then(Value::as_str).unwrap_or("GET").parse().unwrap();
            let mut url = url::Url::parse(ex["x-ms-vss-request-url"].as_str().unwrap()).unwrap();
            let base = if url.host_str() == Some("auditservice.dev.azure.com") {
                env.emu.endpoints().audit.clone()
            } else {
                env.emu.endpoints().devops.clone()
            };
            let mut query: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "api-version")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            for (k, v) in ex["parameters"].as_object().unwrap() {
                if ["startTime", "endTime", "batchSize", "format"].contains(&k.as_str())
                    && !query.iter().any(|(q, _)| q == k)
                {
                    query.push((k.clone(), v.as_str().unwrap().to_string()));
                }
            }
            query.push(("api-version".into(), version.into()));
            url.set_query(None);
            let target = format!(
                "{base}{}?{}",
                url.path(),
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish()
            );
            let mut body = ex["parameters"].get("body").cloned();
            if let Some(b) = body.as_mut().and_then(Value::as_object_mut)
                && b.contains_key("validTo")
            {
                b.insert("validTo".into(), json!(in_days(10))); // the examples' dates are in the past
            }
            let token = if dir.starts_with("tokens") { &pats } else { &admin };
            let (status, resp) = call(&env, method.clone(), &target, token, body.as_ref()).await;
            let expected: u16 = ex["responses"].as_object().unwrap().keys().next().unwrap().parse().unwrap();
            assert_eq!(status, expected, "{rel}: {method} {target} → {resp}");
            if let Some(pe) = resp.get("patTokenError") {
                assert_eq!(pe, "none", "{rel}: {resp}");
            }
            // The response validates against the operation's schema.
            let op_path = url.path().replacen("/fabrikam", "/{organization}", 1).to_lowercase();
            let schema = operation_schema(&spec, &op_path, &method, &query, expected);
            // A `Stream` (file download) has no JSON schema to check.
            if let Some(schema) = schema.filter(|s| !s.is_null() && s["format"] != "Stream") {
                let root = if schema["type"] == "array" {
                    json!({ "type": "array", "items": schema["items"] })
                } else {
                    schema
                };
                let instance = if resp.get("value").is_some() && root["type"] == "array" {
                    resp["value"].clone()
                } else {
                    resp.clone()
                };
                assert_valid(&validator(&spec, root), &instance, &rel);
            }
            count += 1;
        }
    }
    assert_eq!(count, 10 + 3 + 3, "every tokens, tokenAdmin and audit query/download/actions example was replayed");
}

/// The response schema of the operation a request hits: `paths` and `x-ms-paths` (where the spec puts
/// List, which shares Get's path), choosing the operation whose required query parameters are present.
fn operation_schema(
    spec: &Value,
    path: &str,
    method: &Method,
    query: &[(String, String)],
    status: u16,
) -> Option<Value> {
    let mut best: Option<(usize, Value)> = None;
    for key in ["paths", "x-ms-paths"] {
        let Some(paths) = spec.get(key).and_then(Value::as_object) else { continue };
        for (p, ops) in paths {
            let pattern = p.split('?').next().unwrap_or(p).to_lowercase();
            let same = pattern == path
                || (pattern.ends_with("{subjectdescriptor}")
                    && path.starts_with(pattern.trim_end_matches("{subjectdescriptor}")));
            let op = &ops[method.as_str().to_lowercase()];
            if !same || op.is_null() {
                continue;
            }
            let required: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["in"] == "query" && x["required"] == true)
                .filter_map(|x| x["name"].as_str())
                .collect();
            if !required.iter().all(|r| query.iter().any(|(k, _)| k == r)) {
                continue;
            }
            if best.as_ref().is_none_or(|(n, _)| required.len() > *n) {
                best = Some((required.len(), op["responses"][status.to_string()]["schema"].clone()));
            }
        }
    }
    best.map(|(_, s)| s)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out
}
