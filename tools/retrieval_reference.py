#!/usr/bin/env python3
"""Reference numbers for the Rust retrieval metrics: a line-for-line re-implementation of LAVIS
`RetrievalTask._report_metrics` (lavis/tasks/retrieval.py, salesforce-lavis 1.0.2; identical to BLIP
`itm_eval`) run on a random 20-image x 100-caption case (5 captions per image, float32 scores like LAVIS's
`.cpu().numpy()` matrices, the top-16 re-scored and the rest filled with -100 as `compute_sim_matrix` does).

    pip install numpy && python3 tools/retrieval_reference.py tests/fixtures/retrieval-lavis/random_20x100.json
"""
import json, os, sys

import numpy as np

out = sys.argv[1]
rng = np.random.RandomState(20230130)
n_img, per_img, k_test = 20, 5, 16
n_txt = n_img * per_img
img2txt = [list(range(i * per_img, (i + 1) * per_img)) for i in range(n_img)]
txt2img = [t // per_img for t in range(n_txt)]
# shuffle caption ids so ground truth is not block-diagonal
perm = rng.permutation(n_txt)
img2txt = [[int(perm[t]) for t in texts] for texts in img2txt]
txt2img_p = [0] * n_txt
for i, texts in enumerate(img2txt):
    for t in texts:
        txt2img_p[t] = i
txt2img = txt2img_p

sims = rng.normal(size=(n_img, n_txt)).astype(np.float32)
for i, texts in enumerate(img2txt):  # some signal so recalls are neither 0 nor 100
    sims[i, texts] += np.float32(1.2)


def rerank(sim):
    scores = np.full(sim.shape, -100.0, dtype=np.float32)
    for i, row in enumerate(sim):
        top = np.argsort(row)[::-1][:k_test]
        scores[i, top] = row[top] + rng.normal(size=k_test).astype(np.float32) * np.float32(0.5)
    return scores


scores_i2t = rerank(sims)
scores_t2i = rerank(sims.T.copy())


def report_metrics(scores_i2t, scores_t2i, txt2img, img2txt):
    # Images->Text
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    tr1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    tr5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    tr10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    txt_ranks = ranks.astype(int).tolist()
    # Text->Images
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    ir1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    ir5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    ir10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    img_ranks = ranks.astype(int).tolist()
    tr_mean = (tr1 + tr5 + tr10) / 3
    ir_mean = (ir1 + ir5 + ir10) / 3
    r_mean = (tr_mean + ir_mean) / 2
    agg_metrics = (tr1 + tr5 + tr10) / 3
    return {"txt_r1": tr1, "txt_r5": tr5, "txt_r10": tr10, "txt_r_mean": tr_mean, "img_r1": ir1, "img_r5": ir5,
            "img_r10": ir10, "img_r_mean": ir_mean, "r_mean": r_mean, "agg_metrics": agg_metrics}, txt_ranks, img_ranks


metrics, txt_ranks, img_ranks = report_metrics(scores_i2t, scores_t2i, txt2img, img2txt)
# ranks that fall among the -100 fillers depend on numpy's tie order; only those < k_test are comparable
top10_i2t = [np.argsort(row)[::-1][:10].tolist() for row in sims]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump({"scores_i2t": scores_i2t.tolist(), "scores_t2i": scores_t2i.tolist(), "img2txt": img2txt,
               "txt2img": txt2img, "k_test": k_test, "metrics": metrics, "txt_ranks": txt_ranks,
               "img_ranks": img_ranks, "sims_i2t": sims.tolist(), "top10_sims_i2t": top10_i2t,
               "numpy": np.__version__}, f)
print(metrics)
