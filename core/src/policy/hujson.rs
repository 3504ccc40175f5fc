//! HuJSON (JSON with comments and trailing commas) read into a tree that remembers where
//! every value came from, so that each error names the file, line, column and field.
//!
//! The syntax is `jsonc-parser`'s with every extension but comments and trailing commas
//! turned off: what Tailscale's `hujson` accepts, and nothing more (no single quotes, no
//! bare words, no hex numbers). Duplicate keys are errors: JSON's "last one wins" would
//! let a second `"acls"` silently replace the first.

use std::fmt;

use jsonc_parser::ast;
use jsonc_parser::{CollectOptions, CommentCollectionStrategy, ParseOptions};

/// The largest policy file accepted (Tailscale's limit is about 1 MiB as well).
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// A place in the file: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// An error at a place, before the file name is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub pos: Pos,
    pub message: String,
}

impl Located {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        Self { pos, message: message.into() }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Located>;

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spanned<T> {
    pub pos: Pos,
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn new(pos: Pos, value: T) -> Self {
        Self { pos, value }
    }
}

/// A JSON value; numbers are kept as written (the policy format has few, all integers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Spanned<Json>>),
    Object(Vec<Member>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: Spanned<String>,
    pub value: Spanned<Json>,
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Line starts of a text, to turn byte offsets into positions.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let start = self.starts.get(line).copied().unwrap_or(0);
        let end = offset.min(self.text.len());
        let col = self.text.get(start..end).map_or(end.saturating_sub(start), |s| s.chars().count());
        Pos { line: clamp(line + 1), col: clamp(col + 1) }
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Parses HuJSON text into a spanned tree.
pub(crate) fn parse(text: &str) -> Result<Spanned<Json>> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(Located::new(
            Pos { line: 1, col: 1 },
            format!("the policy is {} bytes; at most {MAX_POLICY_BYTES} are accepted", text.len()),
        ));
    }
    let options = ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let collect = CollectOptions { comments: CommentCollectionStrategy::Off, tokens: false };
    let lines = Lines::new(text);
    let parsed = jsonc_parser::parse_to_ast(text, &collect, &options).map_err(|e| {
        Located::new(
            Pos { line: clamp(e.line_display()), col: clamp(e.column_display()) },
            format!("syntax error: {}", e.kind()),
        )
    })?;
    match parsed.value {
        Some(value) => convert(&lines, value),
        None => Err(Located::new(Pos { line: 1, col: 1 }, "the policy is empty (expected an object)")),
    }
}

fn convert(lines: &Lines<'_>, value: ast::Value<'_>) -> Result<Spanned<Json>> {
    Ok(match value {
        ast::Value::StringLit(s) => Spanned::new(lines.pos(s.range.start), Json::String(s.value.into_owned())),
        ast::Value::NumberLit(n) => Spanned::new(lines.pos(n.range.start), Json::Number(n.value.to_string())),
        ast::Value::BooleanLit(b) => Spanned::new(lines.pos(b.range.start), Json::Bool(b.value)),
        ast::Value::NullKeyword(n) => Spanned::new(lines.pos(n.range.start), Json::Null),
        ast::Value::Array(a) => {
            let pos = lines.pos(a.range.start);
            let items = a.elements.into_iter().map(|v| convert(lines, v)).collect::<Result<_>>()?;
            Spanned::new(pos, Json::Array(items))
        }
        ast::Value::Object(o) => {
            let pos = lines.pos(o.range.start);
            let mut members: Vec<Member> = Vec::with_capacity(o.properties.len());
            for prop in o.properties {
                let name_pos = lines.pos(prop.range.start);
                let name = prop.name.into_string();
                if members.iter().any(|m| m.name.value.eq_ignore_ascii_case(&name)) {
                    return Err(Located::new(name_pos, format!("duplicate key {name:?}")));
                }
                let value = convert(lines, prop.value)?;
                members.push(Member { name: Spanned::new(name_pos, name), value });
            }
            Spanned::new(pos, Json::Object(members))
        }
    })
}

/// Reads the fields of one object, refusing unknown keys when done.
pub(crate) struct Fields<'a> {
    path: String,
    members: &'a [Member],
    taken: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// `path` names the object in messages (`acls[2]`).
    pub fn of(value: &'a Spanned<Json>, path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        match &value.value {
            Json::Object(members) => Ok(Self { path, members, taken: vec![false; members.len()] }),
            other => Err(Located::new(value.pos, format!("{path}: expected an object, found {}", other.kind()))),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of a field of this object (`acls[2].dst`).
    pub fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn take(&mut self, key: &str) -> Option<&'a Spanned<Json>> {
        // Keys match without regard to ASCII case, as Go's encoding/json (and so Tailscale)
        // reads them: `ACLs`, `Groups` and `TagOwners` appear in older policy files.
        let i = self.members.iter().position(|m| m.name.value.eq_ignore_ascii_case(key))?;
        self.taken[i] = true;
        self.members.get(i).map(|m| &m.value)
    }

    /// The members not taken yet, in file order (for maps such as `groups`).
    pub fn rest(&mut self) -> Vec<&'a Member> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !self.taken[i] {
                self.taken[i] = true;
                out.push(m);
            }
        }
        out
    }

    /// Errors on the first key nobody took. `known` lists the accepted keys for the message.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        match self.members.iter().zip(&self.taken).find(|(_, taken)| !**taken) {
            None => Ok(()),
            Some((m, _)) => Err(Located::new(
                m.name.pos,
                format!(
                    "{}: unknown field {:?} (expected one of: {})",
                    if self.path.is_empty() { "policy" } else { &self.path },
                    m.name.value,
                    known.join(", ")
                ),
            )),
        }
    }
}

pub(crate) fn string(value: &Spanned<Json>, path: &str) -> Result<Spanned<String>> {
    match &value.value {
        Json::String(s) => Ok(Spanned::new(value.pos, s.clone())),
        other => Err(Located::new(value.pos, format!("{path}: expected a string, found {}", other.kind()))),
    }
}

pub(crate) fn boolean(value: &Spanned<Json>, path: &str) -> Result<bool> {
    match &value.value {
        Json::Bool(b) => Ok(*b),
        other => Err(Located::new(value.pos, format!("{path}: expected true or false, found {}", other.kind()))),
    }
}

pub(crate) fn array<'a>(value: &'a Spanned<Json>, path: &str) -> Result<&'a [Spanned<Json>]> {
    match &value.value {
        Json::Array(items) => Ok(items),
        other => Err(Located::new(value.pos, format!("{path}: expected an array, found {}", other.kind()))),
    }
}

/// An array of strings (`["a", "b"]`).
pub(crate) fn strings(value: &Spanned<Json>, path: &str) -> Result<Vec<Spanned<String>>> {
    array(value, path)?.iter().enumerate().map(|(i, v)| string(v, &format!("{path}[{i}]"))).collect()
}

/// A required field.
pub(crate) fn required<'a>(fields: &mut Fields<'a>, key: &str, at: Pos) -> Result<&'a Spanned<Json>> {
    let path = fields.field_path(key);
    fields.take(key).ok_or_else(|| Located::new(at, format!("{path} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_are_hujson() {
        let tree = parse("// a policy\n{\n  \"a\": [1, 2,], /* b */\n  \"b\": \"x\",\n}\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let Json::Object(members) = &tree.value else { panic!("not an object") };
        assert_eq!(members[1].name.value, "b");
        assert_eq!(members[1].name.pos, Pos { line: 4, col: 3 });
        assert_eq!(members[1].value.pos, Pos { line: 4, col: 8 });
    }

    #[test]
    fn json5_extensions_are_refused() {
        for bad in ["{'a': 1}", "{a: 1}", "{\"a\": 0x10}", "{\"a\": +1}", "{\"a\": 1 \"b\": 2}", "{\"a\": .5}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_and_duplicates_have_positions() {
        let e = parse("{\n  \"a\": 1,\n  \"a\": 2\n}").err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.pos, Pos { line: 3, col: 3 });
        let e = parse("{\n  \"a\": [1,\n  ,]\n}").err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.pos.line, 3);
    }

    #[test]
    fn positions_count_characters() {
        let tree = parse("{\"é\": 1, \"b\": 2}").unwrap_or_else(|e| panic!("{e:?}"));
        let Json::Object(members) = &tree.value else { panic!("not an object") };
        assert_eq!(members[1].name.pos, Pos { line: 1, col: 10 });
    }
}
