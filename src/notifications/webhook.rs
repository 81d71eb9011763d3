//! A webhook's body: a handlebars template in strict mode (a name the event does not have is an
//! error, not an empty string), the event as its data. `{{…}}` escapes for JSON strings (so
//! `"{{afterState.activity.errors}}"` stays valid JSON whatever the errors say); `{{json x}}`
//! writes a value as compact JSON; `{{{…}}}` writes text as it is.

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde_json::Value;

const NAME: &str = "body";

pub struct Template(Handlebars<'static>);

impl Template {
    pub fn compile(text: &str) -> Result<Template, String> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(json_string_content);
        registry.register_helper("json", Box::new(json_helper));
        registry
            .register_template_string(NAME, text)
            .map_err(|e| format!("the template does not compile: {e}"))?;
        Ok(Template(registry))
    }

    /// The body for `event`: it must be JSON (webhook receivers take JSON).
    pub fn render(&self, event: &Value) -> Result<String, String> {
        let body = self
            .0
            .render(NAME, event)
            .map_err(|e| format!("the template does not render: {e}"))?;
        serde_json::from_str::<Value>(&body)
            .map_err(|e| format!("the template does not render JSON ({e})"))?;
        Ok(body)
    }
}

/// The text of a JSON string, without its quotes.
fn json_string_content(text: &str) -> String {
    let quoted = Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn json_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    out.write(&value.value().to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_escaped_for_json_and_json_writes_values() {
        let t = Template::compile(
            r#"{"text": "{{type}}: {{afterState.activity.errors}}", "activity": {{json afterState.activity}}}"#,
        )
        .unwrap();
        let event = json!({"type": "T", "afterState": {"activity": {"errors": "a \"quoted\"\nline", "id": 3}}});
        let body: Value = serde_json::from_str(&t.render(&event).unwrap()).unwrap();
        assert_eq!(body["text"], "T: a \"quoted\"\nline");
        assert_eq!(body["activity"]["id"], 3);
    }

    #[test]
    fn strict_mode_refuses_a_missing_name_and_bodies_must_be_json() {
        let missing = Template::compile(r#"{"t": "{{afterState.nothing}}"}"#).unwrap();
        assert!(missing.render(&json!({"afterState": {}})).is_err());
        let not_json = Template::compile("hello {{type}}").unwrap();
        let error = not_json.render(&json!({"type": "T"})).unwrap_err();
        assert!(error.contains("JSON"), "{error}");
        assert!(Template::compile("{{#if}").is_err());
    }
}
