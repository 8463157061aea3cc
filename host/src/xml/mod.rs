//! XML core: hardening, repair, exclusive C14N and the message envelope.
