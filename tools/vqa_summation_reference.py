#!/usr/bin/env python3
"""A VQA case set whose official score depends on the Python version: CPython 3.12 made `sum()` of floats
compensated (Neumaier; ints met in float mode are still added plainly), and on these 32 questions the overall
accuracy rounds to 55.63 with the plain left fold of CPython <= 3.11 but to 55.62 with 3.12+.
(The case was found by a random search over per-question match counts.)

    python3.11 tools/vqa_summation_reference.py /tmp/lavis/lavis tests/fixtures/vqa-summation expected_py311.json
    python3.12 tools/vqa_summation_reference.py /tmp/lavis/lavis tests/fixtures/vqa-summation expected_py312.json
"""
import json, os, sys

lavis_dir, out, expected_name = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(lavis_dir, "common", "vqa_tools"))
from vqa import VQA  # noqa: E402
from vqa_eval import VQAEval  # noqa: E402

# number of the 10 ground-truth answers that equal the prediction, per question
MATCHES = [1, 1, 1, 3, 4, 3, 4, 4, 3, 1, 1, 2, 3, 0, 1, 1, 0, 0, 1, 3, 3, 4, 2, 3, 3, 3, 1, 0, 0, 2, 3, 1]
questions, annotations, results = [], [], []
for k, m in enumerate(MATCHES):
    qid = 8001 + k
    answers = [{"answer": "cat" if i < m else "dog", "answer_confidence": "yes", "answer_id": i + 1}
               for i in range(10)]
    questions.append({"image_id": 800 + k, "question": f"what animal {k}?", "question_id": qid})
    annotations.append({"question_type": "what animal", "multiple_choice_answer": "dog", "image_id": 800 + k,
                        "answer_type": "other", "question_id": qid, "answers": answers})
    results.append({"question_id": qid, "answer": "cat"})
os.makedirs(out, exist_ok=True)
paths = {n: os.path.join(out, n + ".json") for n in ("questions", "annotations", "results")}
json.dump({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": "val2014",
           "questions": questions}, open(paths["questions"], "w"), indent=1)
json.dump({"info": {}, "license": {}, "data_subtype": "val2014", "annotations": annotations},
          open(paths["annotations"], "w"), indent=1)
json.dump(results, open(paths["results"], "w"), indent=1)
vqa = VQA(paths["annotations"], paths["questions"])
ev = VQAEval(vqa, vqa.loadRes(paths["results"], paths["questions"]), n=2)
ev.evaluate()
json.dump({"overall": ev.accuracy["overall"], "perAnswerType": ev.accuracy["perAnswerType"],
           "perQuestionType": ev.accuracy["perQuestionType"],
           "perQuestion": {str(k): v for k, v in ev.evalQA.items()},
           "scorer": "salesforce-lavis 1.0.2 lavis/common/vqa_tools/vqa_eval.py (VQA API, n=2 rounding)",
           "python": sys.version.split()[0]}, open(os.path.join(out, expected_name), "w"), indent=1)
print("\n", sys.version.split()[0], ev.accuracy["overall"])
