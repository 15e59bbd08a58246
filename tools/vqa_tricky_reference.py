#!/usr/bin/env python3
"""Reference numbers for the Rust VQA/GQA metrics, produced by the VQA evaluation code shipped in the
salesforce-lavis 1.0.2 wheel (lavis/common/vqa_tools/{vqa.py,vqa_eval.py}; both are pure Python).

    pip download --no-deps salesforce-lavis==1.0.2 -d /tmp/lavis && (cd /tmp/lavis && unzip -oq *.whl)
    python3 tools/vqa_tricky_reference.py /tmp/lavis/lavis tests/fixtures/vqa-tricky

Writes into OUT_DIR:
  questions.json, annotations.json, results.json  hand-made tricky VQAv2-format case set
  expected.json        official scores: overall, perAnswerType, perQuestionType, perQuestion
  normalization.json   per string: processPunctuation, processDigitArticle(processPunctuation(.)), and the
                       full prediction pipeline of VQAEval.evaluate; hand-picked strings + seeded random unicode
  unicode_tables.json  what this Python calls whitespace (str.isspace), decimal digits (re `\\d`), and lower()
  gqa.json             GQA accuracy as lavis 1.0.2 GQATask._report_metrics computes it (prediction normalised
                       when inference_method == "generate", ground truth raw) and as LAVIS main does (both)
The numbers depend on the Python version only through float summation (CPython <= 3.11: plain left fold).
"""
import json, os, random, re, sys, unicodedata

lavis_dir, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(lavis_dir, "common", "vqa_tools"))
from vqa import VQA  # noqa: E402
from vqa_eval import VQAEval  # noqa: E402

os.makedirs(out, exist_ok=True)


def dump(name, obj):
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def answers_from(strings, ids=True):
    if ids is True:
        return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(strings)]
    return [{"answer": a, "answer_confidence": "yes"} for a in strings]


# (question_type, answer_type, gt answers (strings or ready dicts), prediction, why)
CASES = [
    ("is the", "yes/no", ["yes"] * 10, "Yes.", "pred normalised, identical GT untouched"),
    ("is the", "yes/no", ["Yes."] * 10, "yes", "identical GT keeps its punctuation and case"),
    ("is the", "yes/no", ["yes"] * 7 + ["Yes"] * 3, "yes", "GT never lower-cased: 7 of 10"),
    ("how many", "number", ["2"] * 3 + ["two"] * 7, "two", "GT number words stay words"),
    ("how many", "number", ["1000"] * 5 + ["1,000"] * 5, "1,000", "digit,digit deletes commas in GT and pred"),
    ("how many", "number", ["1 000"] * 4 + ["1000"] * 6, "1, 000", "comma next to a space is deleted"),
    ("what is", "other", ["hello world"] * 5 + ["hello,world"] * 5, "hello,world", "comma becomes a space"),
    ("what is", "other", ["xray 12"] * 5 + ["x-ray, 1,2"] * 5, "x-ray, 1,2", "digit,digit deletes every symbol"),
    ("what is", "other", ["a b c"] * 3 + ["a-b c-"] * 3 + ["abc"] * 4, "a-b c-", "hyphen adjacent to space"),
    ("what is", "other", ["t shirt"] * 2 + ["t-shirt"] * 2 + ["shirt"] * 6, "t - shirt", "deleted, double space"),
    ("what is", "other", ["t-shirt"] * 10, "t-shirt", "identical GT keeps the hyphen"),
    ("what is", "other", ["usa"] * 4 + ["u.s.a."] * 6, "U.S.A.", "periods not before a digit go"),
    ("how many", "number", ["3.5"] * 3 + ["3 1/2"] * 7, "3.5", "period before a digit stays"),
    ("how many", "number", ["5"] * 6 + ["5."] * 4, "5.", "trailing period"),
    ("how many", "number", [".5"] * 5 + ["0.5"] * 5, ".5", "leading period before a digit"),
    ("how many", "number", ["1.5"] * 5 + ["1.5."] * 5, "1.5.", "mixed periods"),
    ("what is", "other", ["a." * 40] * 4 + ["x"] * 6, "a." * 40, "only 32 periods removed (count=re.UNICODE)"),
    ("what is", "other", ["a" * 33] * 10, "a." * 33, "the 33rd period survives"),
    ("what time", "other", ["10:30"] * 10, "10:30", "colon untouched"),
    ("what is", "other", ["$5"] * 5 + ["5 dollars"] * 5, "$5", "dollar untouched"),
    ("how many", "number", ["2 1 2"] * 3 + ["2 1/2"] * 7, "2 1/2", "slash to space"),
    ("where is", "other", ["left"] * 4 + ["(left)"] * 6, "(left)", "brackets"),
    ("where is", "other", ["left"] * 3 + ["left?"] * 7, "left?", "question mark"),
    ("what is", "other", [""] * 3 + ["?"] * 7, "?", "lone symbol becomes empty"),
    ("what is", "other", ["eg cat"] * 5 + ["e.g. cat"] * 5, "e.g. cat", "abbreviation periods"),
    ("what is", "other", ['"quoted"'] * 5 + ["quoted"] * 5, '"quoted"', "double quotes"),
    ("what is", "other", ["back slash"] * 5 + ["back\\slash"] * 5, "back\\slash", "backslash"),
    ("what is", "other", ["snake case"] * 5 + ["snake_case"] * 5, "snake_case", "underscore"),
    ("what is", "other", ["a b"] * 5 + ["a;b"] * 5, "a; b", "semicolon then space: delete"),
    ("what is", "other", ["ab"] * 5 + ["a@b"] * 5, "a @b", "space before the symbol: delete"),
    ("what is", "other", ["don't know"] * 10, "dont know", "contraction table"),
    ("what is", "other", ["don't know"] * 6 + ["dont know"] * 4, "do not know", "no expansion"),
    ("who is", "other", ["I'm"] * 10, "Im", "capitalised keys never match after lower()"),
    ("who is", "other", ["i'm"] * 5 + ["im"] * 5, "I'm", "lower-cased apostrophe form"),
    ("who is", "other", ["somebodyd"] * 5 + ["somebody'd"] * 5, "somebody'd", "odd table entry"),
    ("what is", "other", ["o'clock"] * 5 + ["oclock"] * 5, "OCLOCK", "oclock"),
    ("what is", "other", ["'twas"] * 4 + ["twas"] * 6, "twas", "twas"),
    ("what is", "other", ["isn't"] * 5 + ["isnt"] * 5, "isnt it", "only whole tokens"),
    ("what is", "other", ["y'all'll"] * 5 + ["yall'll"] * 5, "y'allll", "apostrophe keys"),
    ("what is", "other", ["dog"] * 6 + ["a dog"] * 4, "The Dog", "articles dropped"),
    ("what is", "other", ["apple day"] * 6 + ["an apple a day"] * 4, "an apple a day", "all articles"),
    ("what is", "other", ["theater"] * 10, "the theater", "article prefix only as a token"),
    ("how many", "number", ["0"] * 4 + ["none"] * 6, "None", "none maps to 0"),
    ("how many", "number", ["0 of them"] * 5 + ["none of them"] * 5, "None of them", "number word in a phrase"),
    ("how many", "number", ["10"] * 5 + ["ten"] * 5, "TEN", "ten"),
    ("how many", "number", ["11"] * 5 + ["eleven"] * 5, "eleven", "eleven is not mapped"),
    ("how many", "number", ["0"] * 5 + ["zero"] * 5, "zero", "zero"),
    ("what is", "other", [""] * 4 + ["nothing"] * 6, "", "empty prediction"),
    ("what is", "other", [""] * 4 + ["nothing"] * 6, "the", "prediction that normalises to empty"),
    ("what is", "other", ["nothing"] * 10, "", "empty prediction, no empty GT"),
    ("what is", "other", ["red car"] * 5 + ["red\ncar"] * 5, "red\ncar", "newline in prediction"),
    ("what is", "other", ["yes"] * 5 + [" yes"] * 5, "\tyes ", "tab and spaces; GT whitespace untouched"),
    ("what is", "other", ["café"] * 5 + ["Café"] * 5, "CAFÉ", "accented upper case"),
    ("what is", "other", ["ｙｅｓ"] * 10, "ＹＥＳ", "fullwidth letters lower-case"),
    ("what is", "other", ["i̇stanbul"] * 5 + ["istanbul"] * 5, "İstanbul", "dotted capital I lowers to 2 chars"),
    ("what is", "other", ["οδος"] * 5 + ["οδοσ"] * 3 + ["οδός"] * 2, "ΟΔΟΣ", "final sigma"),
    ("what is", "other", ["straße"] * 5 + ["strasse"] * 5, "STRAẞE", "capital sharp s"),
    ("how many", "number", ["٣٤"] * 5 + ["٣,٤"] * 5, "٣,٤", "Arabic-Indic digits match \\d"),
    ("how many", "number", ["٣.٥"] * 5 + ["35"] * 5, "٣.٥", "period before a non-ASCII digit stays"),
    ("what is", "other", ["red car"] * 5 + ["red\u00a0car"] * 5, "red\u00a0car", "NBSP splits tokens"),
    ("what is", "other", ["yes"] * 10, "\u2003yes\u3000", "unicode spaces stripped"),
    ("what is", "other", ["yes"] * 10, "yes\x1c", "\\x1c is whitespace to Python"),
    ("what is", "other", ["yes\u200b"] * 5 + ["yes"] * 5, "yes\u200b", "zero-width space is not whitespace"),
    ("what is", "other", ["red—white"] * 5 + ["red white"] * 5, "red—white", "em dash untouched"),
    ("what is", "other", ["🐶 dog"] * 5 + ["dog"] * 5, "🐶 Dog", "emoji"),
    ("what color", "other", ["red white"] * 4 + ["red, white"] * 3 + ["red/white"] * 3, "red,white", "mixed"),
    ("what color", "other", ["red white"] * 2 + ["red, white"] * 8, "red, white", "comma-space pred"),
]
# answer-dict identity quirks (leave-one-out compares whole dicts)
SPECIAL = [
    ("is the", "yes/no", answers_from(["yes"] * 10, ids=False), "yes", "identical dicts: nothing left"),
    ("is the", "yes/no", answers_from(["yes"] * 4 + ["no"] * 6, ids=False), "yes", "4 identical yes dicts"),
    ("is the", "yes/no", [dict(d, answer_id=1.0) if i == 1 else d
                          for i, d in enumerate(answers_from(["yes"] * 3 + ["no"] * 7))] , "yes",
     "answer_id 1 == 1.0 in Python"),
    ("is the", "yes/no", [dict(d, answer_confidence="maybe") if i == 0 else dict(d, answer_id=1)
                          for i, d in enumerate(answers_from(["yes"] * 4 + ["no"] * 6))], "yes",
     "same ids, other confidence"),
    ("how many", "number", answers_from(["3", "3", "three"]), "3", "three answers only"),
    ("how many", "number", answers_from(["2"] * 2 + ["two"] * 2 + ["4"] * 6), "2", "m=2 leave-one-out"),
    ("how many", "number", answers_from(["1"] * 1 + ["4"] * 9), "one", "m=1"),
]

questions, annotations, results, notes = [], [], [], {}
qid = 7000
for k, (qtype, atype, gts, pred, why) in enumerate(CASES + SPECIAL):
    qid += 1
    ans = gts if isinstance(gts[0], dict) else answers_from(gts)
    questions.append({"image_id": 900 + k, "question": f"tricky question {k}?", "question_id": qid})
    annotations.append({"question_type": qtype, "multiple_choice_answer": ans[0]["answer"], "image_id": 900 + k,
                        "answer_type": atype, "question_id": qid, "answers": ans})
    results.append({"question_id": qid, "answer": pred})
    notes[str(qid)] = why
# a question answered twice: the VQA API keeps the last entry
results.insert(3, {"question_id": results[0]["question_id"], "answer": "no"})
results.reverse()  # order of results does not matter; the annotation order drives the averages

dump("questions.json", {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                        "data_subtype": "val2014", "questions": questions})
dump("annotations.json", {"info": {}, "license": {}, "data_subtype": "val2014", "annotations": annotations})
dump("results.json", results)
vqa = VQA(os.path.join(out, "annotations.json"), os.path.join(out, "questions.json"))
res = vqa.loadRes(os.path.join(out, "results.json"), os.path.join(out, "questions.json"))
ev = VQAEval(vqa, res, n=2)
ev.evaluate()
print()
dump("expected.json", {
    "overall": ev.accuracy["overall"], "perAnswerType": ev.accuracy["perAnswerType"],
    "perQuestionType": ev.accuracy["perQuestionType"],
    "perQuestion": {str(k): v for k, v in ev.evalQA.items()}, "notes": notes,
    "scorer": "salesforce-lavis 1.0.2 lavis/common/vqa_tools/vqa_eval.py (VQA API, n=2 rounding)",
    "python": sys.version.split()[0]})
print(out, ev.accuracy["overall"], ev.accuracy["perAnswerType"])

# ---- normalisation of single strings
ev = VQAEval()
hand = sorted({pred for *_, pred, _ in CASES + SPECIAL} | {a for c in CASES for a in c[2]} | {
    "Yes.", "Two", "two dogs", "A dog.", "an apple a day", "  The  ", "None of them", "1,000", "1, 000",
    "hello,world", "hello, world", "t-shirt", "t - shirt", "x-ray, 1,2", "a-b c-", "black/white", "U.S.A.", "3.5",
    "5.", ".5", "1.5.", "10:30", "$5", "50%", "2 1/2", "(left)", "left?", "?", "e.g. cat", "dont", "Dont",
    "isnt it", "Im", "I'm", "youre", "a." * 40, "." * 40, "1." * 40, "a" + ". " * 35, "[a]{b}(c)", "<a>=b+c",
    "a`b`c", "a!b!", "!a", "a !", "--", "- -", ",", "1,", ",1", "1,a", "a,1", "1 ,2", "a\tb", "a\nb", "\r\nx\r",
    "x\x0by\x0cz", "\x1fa\x1e", "\x85a\u2028b\u2029", "A\u00a0B", "\u180e", "THE AN A", "a an the dog the",
    "howll", "hows", "Ive", "itll", "let's", "maam", "ow's'at", "'ows'at", "shant", "thats", "whatre", "wont",
    "yall'd've", "youve", "twas twas", "seven eight nine", "ONE", "one.", "one,two", "ΣΑΣ", "ΑΣ.", "Σ", "aΣ b",
    "ǅ", "ǈ", "ﬁ", "ＡＢ", "Ⅻ", "ⅻ", "١٢٣", "१२", "𝟙,𝟚", "٣.", "٣.٤", "²,³", "½", "Ꭰ", "ꭰ", "Ω", "K",
})
rng = random.Random(5)
POOL = (list("abcdeAZ019 .,;:/-'\"?!()[]{}_@<>=+\\`$%&*#~^|\t\n") + ["the", "a", "an", "none", "two", "dont",
        "Im", "isnt", "ten"] + list("éÉßẞİıΣσςΩÅ٣٤۵५௭᠑０９ａＺ\u00a0\u2003\u3000\u200b\x1c\x1d\x85—…«»’“”🐶"))
rand = ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 14))) for _ in range(1500)]
rows = []
for s in hand + rand:
    p = ev.processPunctuation(s)
    pred = s.replace("\n", " ").replace("\t", " ").strip()
    rows.append({"input": s, "punctuation": p, "digit_article": ev.processDigitArticle(p),
                 "prediction": ev.processDigitArticle(ev.processPunctuation(pred))})
dump("normalization.json", rows)

# ---- what this Python means by whitespace, \d and lower()
def ranges(pred):
    out_, start = [], None
    for cp in range(0x110000 + 1):
        ok = cp < 0x110000 and pred(cp)
        if ok and start is None:
            start = cp
        if not ok and start is not None:
            out_.append([start, cp - 1])
            start = None
    return out_


digit_re = re.compile(r"\d")
is_char = lambda cp: not (0xD800 <= cp <= 0xDFFF)  # noqa: E731
dump("unicode_tables.json", {
    "python": sys.version.split()[0], "unicode": unicodedata.unidata_version,
    "isspace": ranges(lambda cp: is_char(cp) and chr(cp).isspace()),
    "decimal_digit": ranges(lambda cp: is_char(cp) and digit_re.match(chr(cp)) is not None),
    "lower": {str(cp): chr(cp).lower() for cp in range(0x110000) if is_char(cp) and chr(cp).lower() != chr(cp)},
})

# ---- GQA (GQATask._report_metrics of the 1.0.2 wheel, and of LAVIS main where both sides are normalised)
GQA = [("yes", "yes"), ("Yes.", "yes"), ("no", "yes"), ("two", "2"), ("2", "2"), ("a dog", "dog"),
       ("the table", "table"), ("Table", "table"), ("t-shirt", "t-shirt"), ("t-shirt", "t shirt"),
       ("left", "Left"), ("red and white", "red and white"), ("none", "0"), ("  on the left ", "left"),
       ("dont", "don't"), ("", ""), ("white.", "white"), ("U.S.A.", "usa"), ("CAFÉ", "café"), ("1,000", "1000")]
wheel = [1 if ev.processDigitArticle(ev.processPunctuation(p)) == g else 0 for p, g in GQA]
main = [1 if ev.processDigitArticle(ev.processPunctuation(p)) == ev.processDigitArticle(ev.processPunctuation(g))
        else 0 for p, g in GQA]
rank = [1 if p == g else 0 for p, g in GQA]  # inference_method "rank": no normalisation at all
dump("gqa.json", {"pairs": [{"pred_ans": p, "gt_ans": g} for p, g in GQA],
                  "wheel_generate": {"correct": wheel, "acc": sum(wheel) / len(wheel) * 100},
                  "wheel_rank": {"correct": rank, "acc": sum(rank) / len(rank) * 100},
                  "main": {"correct": main, "acc": sum(main) / len(main) * 100}})
