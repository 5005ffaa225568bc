//! `inspect --format`: the part of Go's `text/template` people use with
//! docker — `{{.A.B}}` (field names match case-insensitively), `{{.}}`,
//! `{{json .X}}`, `{{index .X "key"}}` / `{{index .X 0}}`, `{{len .X}}`,
//! `{{range .X}}…{{end}}` (`.` is each element), `{{if .X}}…{{else}}…{{end}}`
//! (false, 0, "", null, empty lists and maps are false), and `{{- -}}` trim
//! markers. Evaluated over the JSON `inspect` prints.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Vec<String>),
    Range(Vec<String>, Vec<Node>, Vec<Node>),
    If(Vec<String>, Vec<Node>, Vec<Node>),
}

/// A template that cannot be parsed or evaluated.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct Error(String);

fn err<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error(message.into()))
}

/// Splits `{{ … }}` actions from text, honouring `{{-` and `-}}`.
fn lex(text: &str) -> Result<Vec<(bool, String)>, Error> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let mut before = rest[..start].to_string();
        let mut inner = &rest[start + 2..];
        if let Some(trimmed) = inner.strip_prefix('-') {
            before = before.trim_end().to_string();
            inner = trimmed;
        }
        let end = inner
            .find("}}")
            .ok_or_else(|| Error(format!("unclosed action in {text:?}")))?;
        let mut action = &inner[..end];
        let mut after = &inner[end + 2..];
        if let Some(trimmed) = action.strip_suffix('-') {
            action = trimmed;
            after = after.trim_start();
        }
        if !before.is_empty() {
            out.push((false, before));
        }
        out.push((true, action.trim().to_string()));
        rest = after;
    }
    if !rest.is_empty() {
        out.push((false, rest.to_string()));
    }
    Ok(out)
}

/// Words of an action: quoted strings stay whole (quotes kept).
fn words(action: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            let mut w = String::from('"');
            chars.next();
            for c in chars.by_ref() {
                w.push(c);
                if c == '"' {
                    break;
                }
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    out
}

fn parse_nodes(
    tokens: &[(bool, String)],
    pos: &mut usize,
    stop: &[&str],
) -> Result<(Vec<Node>, String), Error> {
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        let (action, text) = &tokens[*pos];
        *pos += 1;
        if !action {
            nodes.push(Node::Text(text.clone()));
            continue;
        }
        let w = words(text);
        match w.first().map(String::as_str) {
            Some(k) if stop.contains(&k) => return Ok((nodes, k.to_string())),
            Some(kind @ ("range" | "if")) => {
                let pipeline = w[1..].to_vec();
                let (body, ended) = parse_nodes(tokens, pos, &["else", "end"])?;
                let otherwise = if ended == "else" {
                    parse_nodes(tokens, pos, &["end"])?.0
                } else {
                    Vec::new()
                };
                nodes.push(if kind == "range" {
                    Node::Range(pipeline, body, otherwise)
                } else {
                    Node::If(pipeline, body, otherwise)
                });
            }
            Some("end" | "else") => return err(format!("unexpected {{{{{text}}}}}")),
            Some(_) => nodes.push(Node::Action(w)),
            None => return err("empty action {{}}"),
        }
    }
    if stop.is_empty() {
        Ok((nodes, String::new()))
    } else {
        err("missing {{end}}")
    }
}

fn parse(text: &str) -> Result<Vec<Node>, Error> {
    let tokens = lex(text)?;
    let mut pos = 0;
    Ok(parse_nodes(&tokens, &mut pos, &[])?.0)
}

/// `.A.B` on `dot`: each name matched exactly, else case-insensitively.
fn field(dot: &Value, path: &str) -> Value {
    let mut v = dot.clone();
    for name in path.split('.').filter(|n| !n.is_empty()) {
        v = match &v {
            Value::Object(map) => map
                .get(name)
                .or_else(|| {
                    map.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                })
                .cloned()
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    v
}

fn argument(dot: &Value, word: &str) -> Result<Value, Error> {
    if word.starts_with('.') {
        Ok(field(dot, word))
    } else if let Some(s) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Ok(Value::String(s.to_string()))
    } else if let Ok(n) = word.parse::<i64>() {
        Ok(Value::from(n))
    } else {
        err(format!("unknown argument {word:?}"))
    }
}

fn pipeline(dot: &Value, words: &[String]) -> Result<Value, Error> {
    let Some(first) = words.first() else {
        return err("empty pipeline");
    };
    let args = |n: usize| -> Result<Vec<Value>, Error> {
        let values: Vec<Value> = words[1..]
            .iter()
            .map(|w| argument(dot, w))
            .collect::<Result<_, _>>()?;
        if values.len() != n {
            return err(format!("{first} takes {n} argument(s)"));
        }
        Ok(values)
    };
    match first.as_str() {
        "json" => Ok(Value::String(
            serde_json::to_string(&args(1)?[0]).unwrap_or_default(),
        )),
        "len" => match &args(1)?[0] {
            Value::Array(a) => Ok(Value::from(a.len())),
            Value::Object(o) => Ok(Value::from(o.len())),
            Value::String(s) => Ok(Value::from(s.len())),
            _ => err("len of a value with no length"),
        },
        "index" => {
            let a = args(2)?;
            Ok(match (&a[0], &a[1]) {
                (Value::Object(o), Value::String(k)) => o.get(k).cloned().unwrap_or(Value::Null),
                (Value::Array(v), Value::Number(n)) => n
                    .as_u64()
                    .and_then(|i| v.get(i as usize))
                    .cloned()
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            })
        }
        w if words.len() == 1 => argument(dot, w),
        other => err(format!("function {other:?} not defined")),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as Go's template prints it (scalars plainly, the rest as JSON).
fn print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn eval(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), Error> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(w) => out.push_str(&print(&pipeline(dot, w)?)),
            Node::If(p, body, otherwise) => {
                let branch = if truthy(&pipeline(dot, p)?) {
                    body
                } else {
                    otherwise
                };
                eval(branch, dot, out)?;
            }
            Node::Range(p, body, otherwise) => {
                let items: Vec<Value> = match pipeline(dot, p)? {
                    Value::Array(a) => a,
                    Value::Object(o) => o.into_iter().map(|(_, v)| v).collect(),
                    Value::Null => Vec::new(),
                    other => return err(format!("range over {other}")),
                };
                if items.is_empty() {
                    eval(otherwise, dot, out)?;
                }
                for item in &items {
                    eval(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Renders `template` over `value`.
pub fn render(template: &str, value: &Value) -> Result<String, Error> {
    let nodes = parse(template)?;
    let mut out = String::new();
    eval(&nodes, value, &mut out)?;
    Ok(out)
}

/// A container's `inspect` document with docker's `State` object added
/// (`{{.State.Pid}}`, `.State.Status`, `.State.Running`, `.State.ExitCode`),
/// so docker's templates work; other documents as they are.
pub fn docker_names(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(map) = &mut doc {
        if map.contains_key("pid") && !map.contains_key("State") {
            let state = serde_json::json!({
                "Pid": map.get("pid").cloned().unwrap_or(Value::Null),
                "Status": map.get("status").cloned().unwrap_or(Value::Null),
                "Running": map.get("status").and_then(Value::as_str) == Some("running"),
                "ExitCode": map.get("exitStatus").cloned().unwrap_or(Value::Null),
            });
            map.insert("State".into(), state);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_common_forms() {
        let v = json!({"State": {"Pid": 42, "Running": true}, "name": "web",
            "ports": [{"p": 80}, {"p": 443}], "labels": {"a.b": "c"}, "none": []});
        let r = |t: &str| render(t, &v).unwrap();
        assert_eq!(r("{{.State.Pid}}"), "42");
        assert_eq!(r("{{.Name}}/{{.state.running}}"), "web/true");
        assert_eq!(r("{{json .ports}}"), r#"[{"p":80},{"p":443}]"#);
        assert_eq!(r(r#"{{index .labels "a.b"}}"#), "c");
        assert_eq!(r("{{index .ports 1}}"), r#"{"p":443}"#);
        assert_eq!(r("{{range .ports}}{{.p}},{{end}}"), "80,443,");
        assert_eq!(r("{{range .none}}x{{else}}empty{{end}}"), "empty");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        assert_eq!(r("{{len .ports}} {{.missing}}"), "2 <no value>");
        assert_eq!(r("a  {{- .name -}}  b"), "awebb");
        assert!(render("{{if .x}}", &v).is_err());
        assert!(render("{{nope .x}}", &v).is_err());
    }
}
