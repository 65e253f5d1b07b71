//! `{field}` templates that turn a dataset row into an [`Example`].

use crate::error::{DataError, Result};
use crate::example::Example;
use serde::{Deserialize, Serialize};

/// A pair of templates: the prompt and the completion. Placeholders are `{name}`; `{{` and `}}` are
/// literal braces. Rendering fails on a placeholder the task does not provide, naming it and the
/// available fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub prompt: String,
    pub completion: String,
}

impl Template {
    pub fn new(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        Template {
            prompt: prompt.into(),
            completion: completion.into(),
        }
    }

    /// Render both halves with `fields` (name → value).
    pub fn render(&self, fields: &[(&str, String)]) -> Result<Example> {
        Ok(Example {
            prompt: render_str(&self.prompt, fields)?,
            completion: render_str(&self.completion, fields)?,
        })
    }

    /// Check every placeholder against `names` without rendering.
    pub fn validate(&self, names: &[&str]) -> Result<()> {
        let fields: Vec<(&str, String)> = names.iter().map(|n| (*n, String::new())).collect();
        self.render(&fields).map(|_| ())
    }
}

/// Render one template string.
pub fn render_str(template: &str, fields: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                if let Some(&(_, '{')) = chars.peek() {
                    chars.next();
                    out.push('{');
                    continue;
                }
                let rest = &template[i + 1..];
                let end = rest.find('}').ok_or_else(|| {
                    DataError::Template(format!("unclosed `{{` at byte {i} in template {template:?}"))
                })?;
                let name = &rest[..end];
                let value = fields.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                    let avail: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
                    DataError::Template(format!(
                        "unknown field `{{{name}}}` in template {template:?}; available: {}",
                        avail.join(", ")
                    ))
                })?;
                out.push_str(&value.1);
                let close = i + 1 + end;
                while let Some(&(j, _)) = chars.peek() {
                    if j > close {
                        break;
                    }
                    chars.next();
                }
            }
            '}' => {
                if let Some(&(_, '}')) = chars.peek() {
                    chars.next();
                    out.push('}');
                } else {
                    return Err(DataError::Template(format!(
                        "lone `}}` at byte {i} in template {template:?} (write `}}}}` for a literal brace)"
                    )));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_escapes() {
        let f = [("a", "x".to_string()), ("bb", "y z".to_string())];
        assert_eq!(render_str("{a}-{bb} {{lit}}", &f).unwrap(), "x-y z {lit}");
        let e = render_str("{nope}", &f).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("bb"), "{e}");
        assert!(render_str("{a", &f).is_err());
        assert!(render_str("a}", &f).is_err());
    }
}
