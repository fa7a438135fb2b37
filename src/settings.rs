//! Each setting defined once. A settings group (training's, the model's,
//! ...) is one `settings_group!` table: per key its type, default, doc and
//! check. From that one table come the config struct (serde: the TOML key
//! and the model file's record), its `Default`, the command line's flags
//! (clap: `--key-name`, the doc as help, unset = absent), the list of keys
//! (Python's keywords) and the per-key checks, the way ripgrep defines each
//! flag once. Checks that relate several keys stay hand-written beside the
//! group (`validate`).
//!
//! A macro, not a derive crate: the table has to produce two structs (the
//! config and its flags, whose fields are `Option`s) from one list, which
//! no maintained derive does without writing each field twice.

/// A check of one value: `Err(what was expected, with what was found)`.
pub type Check<T> = fn(&T) -> Result<(), String>;

/// At least 1.
pub fn positive(v: &usize) -> Result<(), String> {
    match v {
        0 => Err("expected at least 1, found 0".into()),
        _ => Ok(()),
    }
}

/// A finite number, not negative.
pub fn finite_non_negative(v: &f32) -> Result<(), String> {
    if v.is_finite() && *v >= 0.0 {
        Ok(())
    } else {
        Err(format!("expected a finite number >= 0, found {v}"))
    }
}

/// A dropout probability: in [0, 1).
pub fn probability(p: &f32) -> Result<(), String> {
    if (0.0..1.0).contains(p) {
        Ok(())
    } else {
        Err(format!("expected a probability in [0, 1), found {p}"))
    }
}

/// A fraction: in [0, 1].
pub fn unit_interval(v: &f32) -> Result<(), String> {
    if (0.0..=1.0).contains(v) {
        Ok(())
    } else {
        Err(format!("expected a value in [0, 1], found {v}"))
    }
}

/// Defines a settings group: the config struct `$Config` (every key with
/// its doc, `Default` from the table), the flags struct `$Flags` (clap
/// `Args`: each key as `--key-name`, an `Option` so an unset flag leaves
/// the value below it; serialises to a TOML table of the flags given),
/// `$Config::KEYS` and `$Config::check_each` (each key's `check`, the first
/// failure named by its key).
///
/// ```text
/// settings_group! {
///     #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
///     #[serde(default, deny_unknown_fields)]
///     pub struct TrainConfig / TrainFlags {
///         /// Epochs to train.
///         epochs: usize = 5, check(positive);
///         /// Shuffle the train examples every epoch.
///         shuffle: bool = false, flag(value_name = "BOOL", num_args = 0..=1, ...);
///     }
/// }
/// ```
macro_rules! settings_group {
    (
        $(#[$config_meta:meta])*
        pub struct $Config:ident / $Flags:ident {
            $(
                $(#[doc = $doc:literal])*
                $key:ident : $ty:ty = $default:expr
                    $(, check($check:expr))?
                    $(, flag($($arg:tt)*))?
                ;
            )*
        }
    ) => {
        $(#[$config_meta])*
        pub struct $Config {
            $( $(#[doc = $doc])* pub $key: $ty, )*
        }

        impl Default for $Config {
            fn default() -> Self {
                $Config { $( $key: $default, )* }
            }
        }

        // `$Config`'s keys as flags (`--key-name`), each unset unless
        // given. No doc comment: a flattened group's doc would become the
        // command's description.
        #[derive(clap::Args, Debug, Default, serde::Serialize)]
        pub struct $Flags {
            $(
                $(#[doc = $doc])*
                #[arg(long $(, $($arg)*)?)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $key: Option<$ty>,
            )*
        }

        impl $Config {
            /// Every key of the group, in the table's order: the TOML
            /// keys, the flags (with `-` for `_`) and Python's keywords.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            /// Each key's own check, in the table's order; the first that
            /// fails is named by its key.
            pub fn check_each(&self) -> Result<(), (&'static str, String)> {
                $($(
                    let check: $crate::settings::Check<$ty> = $check;
                    check(&self.$key).map_err(|message| (stringify!($key), message))?;
                )?)*
                Ok(())
            }
        }
    };
}

pub(crate) use settings_group;

#[cfg(test)]
mod tests {
    use super::*;

    settings_group! {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Example / ExampleFlags {
            /// How many.
            count: usize = 3, check(positive);
            /// How likely.
            chance: f32 = 0.5, check(probability), flag(value_name = "P");
            /// A switch.
            on: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
            /// Unchecked.
            name: String = "x".into();
        }
    }

    #[test]
    fn one_table_gives_the_struct_its_defaults_flags_keys_and_checks() {
        use clap::{Args, FromArgMatches};
        let d = Example::default();
        assert_eq!(
            (d.count, d.chance, d.on, d.name.as_str()),
            (3, 0.5, false, "x")
        );
        assert_eq!(Example::KEYS, ["count", "chance", "on", "name"]);
        assert_eq!(d.check_each(), Ok(()));
        let bad = Example {
            chance: 1.5,
            ..Example::default()
        };
        let (key, message) = bad.check_each().unwrap_err();
        assert_eq!(key, "chance");
        assert!(
            message.contains("[0, 1)") && message.contains("1.5"),
            "{message}"
        );
        let zero = Example {
            count: 0,
            chance: 2.0,
            ..Example::default()
        };
        assert_eq!(zero.check_each().unwrap_err().0, "count", "table order");

        let command = ExampleFlags::augment_args(clap::Command::new("t"));
        let help = command.clone().render_help().to_string();
        assert!(
            help.contains("--chance <P>") && help.contains("How likely"),
            "{help}"
        );
        let matches = command
            .try_get_matches_from(["t", "--count", "7", "--on"])
            .unwrap();
        let flags = ExampleFlags::from_arg_matches(&matches).unwrap();
        assert_eq!(
            (flags.count, flags.chance, flags.on),
            (Some(7), None, Some(true))
        );
        // Only the flags given reach the overlay.
        let table = toml::Table::try_from(&flags).unwrap();
        assert_eq!(table.keys().collect::<Vec<_>>(), ["count", "on"]);
        let overlaid: Example = toml::Table::try_from(&d)
            .map(|mut t| {
                t.extend(table);
                t
            })
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            (overlaid.count, overlaid.on, overlaid.chance),
            (7, true, 0.5)
        );
    }

    #[test]
    fn the_shared_checks_say_what_was_expected() {
        assert!(positive(&1).is_ok() && positive(&0).is_err());
        assert!(finite_non_negative(&0.0).is_ok());
        for bad in [-1.0, f32::NAN, f32::INFINITY] {
            assert!(finite_non_negative(&bad)
                .unwrap_err()
                .contains("finite number >= 0"));
        }
        assert!(probability(&0.0).is_ok() && probability(&1.0).is_err());
        assert!(unit_interval(&1.0).is_ok() && unit_interval(&-0.1).is_err());
    }
}
