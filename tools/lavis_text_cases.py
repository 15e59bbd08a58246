"""Expected outputs of LAVIS BlipCaptionProcessor / BlipQuestionProcessor on tricky strings.

Copied from lavis/processors/blip_processors.py (salesforce-lavis 1.0.2, identical on main).
Prints Rust test-case tuples for datasets/src/text/clean.rs."""
import json
import re


def pre_caption(caption, max_words=50):
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n")
    caption = caption.strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def pre_question(question, max_words=50):
    question = re.sub(r"([.!\"()*#:;~])", "", question.lower())
    question = question.rstrip(" ")
    words = question.split(" ")
    if len(words) > max_words:
        question = " ".join(words[:max_words])
    return question


CASES = [
    "A photo of two cats laying on a pink blanket!",
    "  Hello,   World... (test) #1: it's a t-shirt; ok~  ",
    "Line one.\nLine two\n",
    "tab\tseparated\t\twords",
    "What's on the table?",
    "Is the man's shirt RED??  ",
    "\"Quoted\" *stars* and ~tilde~",
    "ÉCOLE Straße ΣΟΦΟΣ",
    "trailing newline only\n",
    "a.b.c",
    " ".join(f"w{i}" for i in range(60)),
    "single\ttab",
    "   ",
]

if __name__ == "__main__":
    for c in CASES:
        print(json.dumps([c, pre_caption(c), pre_caption(c, 5), pre_question(c), pre_question(c, 5)],
                         ensure_ascii=False))
