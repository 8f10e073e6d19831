//! A plugin built against `myelin:plugin@0.2.0`, a contract version this
//! server does not serve: loading it must fail with a message naming the
//! versions. Its WIT is inline, as a future contract's would be in its SDK.

wit_bindgen::generate!({
    inline: r#"
        package myelin:plugin@0.2.0;

        interface lifecycle {
            init: func(config: string) -> result<list<string>, string>;
        }

        world plugin {
            export lifecycle;
        }
    "#,
});

struct FuturePlugin;

impl exports::myelin::plugin::lifecycle::Guest for FuturePlugin {
    fn init(_config: String) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

export!(FuturePlugin);
