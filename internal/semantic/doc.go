// Package semantic holds what a semantic cache needs besides embeddings:
// the guards that decide whether a question may be served the answer to
// another, similar one, and the arithmetic of calibrating the similarity
// threshold on labelled pairs.
//
// A similarity threshold alone cannot make that decision safe. "Where is
// order 123?" and "Where is order 456?" embed almost identically, as do
// "How do I enable 2FA?" and "How do I not enable 2FA?", or "Tôi chưa nhận
// được hàng" ("I have not received the goods") and "Tôi đã nhận được hàng"
// ("I have received the goods"); any threshold high enough to tell them
// apart would also turn away most real paraphrases. The guards are exact
// checks that no similarity can override: both questions must name the
// same e-mail addresses, URLs, codes and numbers, and hold the same number
// of negation words (see Guard, Facts and Extract for the rules). They
// cost a cache only hits: a paraphrase that writes "2,000" as "two
// thousand" misses and goes to the model, where a wrong hit would have
// served a wrong answer.
//
// Calibrate reports, per threshold, how many labelled pairs a cache would
// serve, how many of them wrongly, and how many the guards refused, so
// that a threshold is chosen from measurements rather than guessed.
package semantic
