//! Per-node templates for `exec`: `{{node}}`, `{{first}}` and `{{label.NAME}}`.
//!
//! `{{node}}` is the node's name, `{{first}}` the name of the first targeted node
//! (e.g. to point replicas at a primary), `{{label.NAME}}` the node's label NAME.
//! A template that names a label the node does not have, or an unknown or unclosed
//! placeholder, is an error for that node rather than a silently empty string.

use crate::pools::NodeSpec;

/// Renders `template` for `node`; `first` is the first targeted node's name.
pub fn render(template: &str, node: &NodeSpec, first: &str) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "unclosed '{{{{' in {template:?}: placeholders are {{{{node}}}}, {{{{first}}}}, {{{{label.NAME}}}}"
            ));
        };
        let name = after[..end].trim();
        let value = match name {
            "node" => node.name.clone(),
            "first" => first.to_string(),
            other => match other.strip_prefix("label.") {
                Some(label) => node.labels.get(label).cloned().ok_or_else(|| {
                    format!("node '{}' has no label '{label}'", node.name)
                })?,
                None => {
                    return Err(format!(
                        "unknown placeholder '{{{{{other}}}}}': use {{{{node}}}}, {{{{first}}}} or {{{{label.NAME}}}}"
                    ))
                }
            },
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node() -> NodeSpec {
        NodeSpec {
            name: "web-2".into(),
            control: String::new(),
            pubsub: String::new(),
            labels: [("zone".to_string(), "eu-1".to_string())].into(),
            keys: None,
        }
    }

    #[test]
    fn substitutes_node_first_and_labels() {
        let text = render(
            "echo {{node}} {{ first }} {{label.zone}}!",
            &node(),
            "web-1",
        )
        .unwrap();
        assert_eq!(text, "echo web-2 web-1 eu-1!");
        assert_eq!(render("no braces", &node(), "x").unwrap(), "no braces");
    }

    #[test]
    fn refuses_missing_labels_and_unknown_placeholders() {
        let err = render("{{label.disk}}", &node(), "x").unwrap_err();
        assert!(err.contains("node 'web-2' has no label 'disk'"), "{err}");
        assert!(render("{{host}}", &node(), "x")
            .unwrap_err()
            .contains("unknown placeholder '{{host}}'"));
        assert!(render("{{node", &node(), "x")
            .unwrap_err()
            .contains("unclosed"));
    }
}
