//! The words of every message Passage sends. Each carries the code and nothing else secret
//! (R23, R27); addresses come from the account directory, never from a request (R5, R19).

use passage_core::time::Timestamp;

pub(crate) fn code_email(portal: &str, code: &str, minutes: u64) -> (String, String) {
    let subject = format!("{portal}: your verification code");
    let text = format!(
        "Your {portal} verification code is:\n\n    {code}\n\n\
         Enter it on the page where you asked to reset your password. It expires in \
         {minutes} minute{}.\n\n\
         If you did not ask to reset your password, ignore this email: nothing changes \
         unless the code is entered.\n",
        if minutes == 1 { "" } else { "s" }
    );
    (subject, text)
}

pub(crate) fn code_sms(portal: &str, code: &str) -> String {
    format!("{code} is your {portal} verification code. Do not share it.")
}

pub(crate) fn pound_call(portal: &str) -> String {
    format!(
        "This is the {portal}. Someone is resetting your password. \
         If this is you, press the pound key now. If not, hang up."
    )
}

pub(crate) fn spoken_code_call(portal: &str, code: &str) -> String {
    let spaced: Vec<String> = code.chars().map(|c| c.to_string()).collect();
    let spaced = spaced.join(", ");
    format!(
        "This is the {portal}. Your verification code is: {spaced}. Again: {spaced}. \
         Type it on the page where you are resetting your password."
    )
}

pub(crate) fn password_changed_email(portal: &str, at: Timestamp) -> (String, String) {
    let subject = format!("{portal}: your password was changed");
    let text = format!(
        "The password of your {portal} account was changed at {at}.\n\n\
         If this was you, there is nothing more to do.\n\
         If it was not you, contact the service desk at once: the desk can lock the account \
         and show what happened.\n"
    );
    (subject, text)
}

/// "Still there?": the stall scanner's reminder. No link and no code (R22, R23): the person
/// returns to the page or the chat they were using.
pub(crate) fn nudge_email(portal: &str) -> (String, String) {
    let subject = format!("{portal}: still resetting your password?");
    let text = format!(
        "You started resetting your {portal} password a few minutes ago and have not \
         finished.\n\nIf you are still there, go back to the page where you started: if your \
         code has timed out, select \"Re-send code\" for a new one.\n\
         If you did not start this, you can ignore this message.\n"
    );
    (subject, text)
}
