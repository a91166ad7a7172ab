"""Write the metric fixtures that tests/test_metrics.c compares against.

Run from the repository root, in the environment of tools/requirements.txt,
which pins rouge-score, with the data files under ../shared/data:

    tools/venv/bin/python tools/make_metric_fixtures.py [--data DIR]

The fixtures contain indices and numbers only, never text from the data, so
the test rebuilds every (target, prediction) pair from the same files by the
rules below and scores it with the C metrics.

tests/fixtures/metrics_rouge.txt: rouge_score.rouge_scorer.RougeScorer(
["rouge1", "rouge2", "rougeL"]) with its defaults, score(target, prediction),
for four sets of pairs:

    0  xsum/xsum_test_lines0001-0800.jsonl, record i: target = its summary,
       prediction = the first line of its document (text before the first "\\n")
    1  the same file: target = summary of record i, prediction = summary of
       record (i + 1) % records
    2  the .data files of the xsum/xsum-extracts-* directories, directories and
       files in name order: target = the text between the [XSUM]INTRODUCTION[XSUM]
       and [XSUM]RESTBODY[XSUM] markers, prediction = the first line after the
       RESTBODY marker that contains a character other than space, tab and CR
    3  the same files: target as in set 2, prediction = all text after the
       RESTBODY marker

Each line is "set index" then precision, recall and F-measure of rouge1,
rouge2 and rougeL. Lines "mean set rouge1 rouge2 rougeL" give the mean
F-measure of a set on the 0-100 scale.

tests/fixtures/metrics_squad.txt: the exact match and F1 of SQuAD v1.1's
evaluation script (written out below), best over every gold answer, for each
question of squad/dev-v1.1-half-a.json in file order. The prediction of
question q is built by rule q % 6 from its context, whose characters are
Python str indices, where a separator is one of space, tab, LF and CR:

    0  the last gold answer
    1  the first gold answer widened to the start of the word before it and
       the end of the word after it
    2  context[s + 3 : e + 3] for the first answer's span [s, e), clipped to
       the context
    3  the first gold answer of question (q + 1) % questions
    4  word q % words of the context, a word being a maximal run of
       non-separators
    5  the first gold answer without its last space-separated word, or, when it
       has no space, "the " + answer + "."

Each line is "question rule exact_match f1", and the line "mean exact_match
f1" gives the means on the 0-100 scale as the official script reports them.

tests/fixtures/metrics_unicode.txt: what Python's str.lower, str.isspace and
re's \\w return for every code point, and which characters Python's
final-sigma rule treats as case-ignorable or cased, as code point ranges.
"""

import argparse
import collections
import glob
import json
import os
import re
import string
import sys
import unicodedata
from importlib import metadata

from rouge_score import rouge_scorer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL"]
SEPARATORS = " \t\n\r"
SQUAD_RULES = 6

# Ten significant digits: the test compares within 1e-6 and the files stay small.
NUMBER_FORMAT = "%.10g"


# SQuAD v1.1's evaluation script (evaluate-v1.1.py), function by function.

def squad_normalize_answer(text):
    text = text.lower()
    punctuation = set(string.punctuation)
    text = "".join(ch for ch in text if ch not in punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction, gold):
    prediction_tokens = squad_normalize_answer(prediction).split()
    gold_tokens = squad_normalize_answer(gold).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0
    precision = 1.0 * same / len(prediction_tokens)
    recall = 1.0 * same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_exact_match(prediction, gold):
    return squad_normalize_answer(prediction) == squad_normalize_answer(gold)


def squad_best(metric, prediction, golds):
    return max(metric(prediction, gold) for gold in golds)


def format_number(value):
    return NUMBER_FORMAT % value


def is_separator(ch):
    return ch in SEPARATORS


def context_words(context):
    return [w for w in re.split("[ \t\n\r]+", context) if w]


def squad_prediction(rule, context, answer, answer_start, all_answers, next_first_answer,
                     question):
    end = answer_start + len(answer)
    if rule == 0:
        return all_answers[-1]
    if rule == 1:
        start = answer_start
        while start > 0 and is_separator(context[start - 1]):
            start -= 1
        while start > 0 and not is_separator(context[start - 1]):
            start -= 1
        stop = end
        while stop < len(context) and is_separator(context[stop]):
            stop += 1
        while stop < len(context) and not is_separator(context[stop]):
            stop += 1
        return context[start:stop]
    if rule == 2:
        return context[min(answer_start + 3, len(context)):min(end + 3, len(context))]
    if rule == 3:
        return next_first_answer
    if rule == 4:
        words = context_words(context)
        return words[question % len(words)]
    if " " in answer:
        return answer[:answer.rindex(" ")]
    return "the " + answer + "."


def write_squad(data_dir):
    path = os.path.join(data_dir, "squad", "dev-v1.1-half-a.json")
    with open(path, encoding="utf-8") as f:
        dataset = json.load(f)
    questions = []
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append((paragraph["context"], qa["answers"]))
    lines = [
        "# SQuAD v1.1 exact match and F1 per question of squad/dev-v1.1-half-a.json.",
        "# Written by tools/make_metric_fixtures.py from the official evaluation logic.",
        "# Columns: question rule exact_match f1",
    ]
    total_em = 0
    total_f1 = 0
    for q, (context, answers) in enumerate(questions):
        golds = [a["text"] for a in answers]
        rule = q % SQUAD_RULES
        next_first = questions[(q + 1) % len(questions)][1][0]["text"]
        prediction = squad_prediction(rule, context, answers[0]["text"],
                                      answers[0]["answer_start"], golds, next_first, q)
        em = squad_best(squad_exact_match, prediction, golds)
        f1 = squad_best(squad_f1, prediction, golds)
        total_em += em
        total_f1 += f1
        lines.append("%d %d %d %s" % (q, rule, int(em), format_number(f1)))
    # As evaluate-v1.1.py reports them: 100 * sum / questions.
    mean_em = 100.0 * total_em / len(questions)
    mean_f1 = 100.0 * total_f1 / len(questions)
    lines.append("mean %s %s" % (format_number(mean_em), format_number(mean_f1)))
    out = os.path.join(FIXTURE_DIR, "metrics_squad.txt")
    with open(out, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %d questions, exact match %.4f, F1 %.4f"
          % (out, len(questions), mean_em, mean_f1))


def xsum_json_pairs(data_dir):
    path = os.path.join(data_dir, "xsum", "xsum_test_lines0001-0800.jsonl")
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    lead = [(r["summary"], r["document"].split("\n")[0]) for r in records]
    following = [(records[i]["summary"], records[(i + 1) % len(records)]["summary"])
                 for i in range(len(records))]
    return lead, following


def xsum_raw_pairs(data_dir):
    paths = sorted(glob.glob(os.path.join(data_dir, "xsum", "xsum-extracts-*", "*.data")))
    lead = []
    body_pairs = []
    for path in paths:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        after_intro = text.split("[XSUM]INTRODUCTION[XSUM]", 1)[1]
        intro, body = after_intro.split("[XSUM]RESTBODY[XSUM]", 1)
        first = ""
        for line in body.split("\n"):
            if line.strip(" \t\r"):
                first = line
                break
        lead.append((intro, first))
        body_pairs.append((intro, body))
    return lead, body_pairs


def write_rouge(data_dir):
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES)
    json_lead, json_following = xsum_json_pairs(data_dir)
    raw_lead, raw_body = xsum_raw_pairs(data_dir)
    sets = [json_lead, json_following, raw_lead, raw_body]
    lines = [
        "# ROUGE of rouge_score %s RougeScorer(%s), score(target, prediction)."
        % (metadata.version("rouge-score"), ROUGE_TYPES),
        "# Written by tools/make_metric_fixtures.py; pairs as its docstring builds them.",
        "# Columns: set index, then precision recall fmeasure of rouge1 rouge2 rougeL",
    ]
    means = []
    for number, pairs in enumerate(sets):
        totals = [0.0] * len(ROUGE_TYPES)
        for index, (target, prediction) in enumerate(pairs):
            scores = scorer.score(target, prediction)
            fields = ["%d %d" % (number, index)]
            for k, rouge_type in enumerate(ROUGE_TYPES):
                s = scores[rouge_type]
                fields += [format_number(s.precision), format_number(s.recall),
                           format_number(s.fmeasure)]
                totals[k] += s.fmeasure
            lines.append(" ".join(fields))
        means.append("mean %d %s" % (number, " ".join(
            format_number(100.0 * t / len(pairs)) for t in totals)))
    lines += means
    out = os.path.join(FIXTURE_DIR, "metrics_rouge.txt")
    with open(out, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %s pairs" % (out, " + ".join(str(len(s)) for s in sets)))


WORD_RE = re.compile(r"\w")


def sigma_after(prefix):
    """1 when Python lowercases the capital sigma after prefix to the final sigma."""
    return (prefix + "\u03a3").lower()[-1] == "\u03c2"


def code_points():
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        yield c


def ranges(predicate):
    out = []
    start = None
    previous = None
    for c in code_points():
        inside = predicate(c)
        if inside and start is not None and c == previous + 1:
            previous = c
            continue
        if start is not None:
            out.append((start, previous))
            start = None
        if inside:
            start = previous = c
    if start is not None:
        out.append((start, previous))
    return out


def write_unicode():
    def unassigned(c):
        return unicodedata.category(chr(c)) == "Cn"

    def ignorable(c):
        # "A" + c + sigma ends in a final sigma when c is case-ignorable (the
        # rule skips it and finds "A") or cased. c + sigma does when c is cased
        # and not case-ignorable.
        return sigma_after("A" + chr(c)) and not sigma_after(chr(c))

    classes = [
        ("unassigned", unassigned),
        ("space", lambda c: chr(c).isspace()),
        ("word", lambda c: WORD_RE.match(chr(c)) is not None),
        ("ignorable", ignorable),
        ("cased", lambda c: sigma_after(chr(c))),
    ]
    lines = [
        "# Python %d.%d.%d string properties per code point, Unicode %s."
        % (sys.version_info[:3] + (unicodedata.unidata_version,)),
        "# Written by tools/make_metric_fixtures.py. Ranges are inclusive, in hex:",
        "#   unassigned: category Cn; space: str.isspace(); word: re's \\w matches;",
        "#   ignorable: case-ignorable for the final-sigma rule of str.lower();",
        "#   cased: cased and not case-ignorable for that rule.",
        "# Lines 'lower C L...' list every code point whose str.lower() differs.",
        "unicode %s" % unicodedata.unidata_version,
    ]
    for name, predicate in classes:
        for first, last in ranges(predicate):
            lines.append("%s %04X %04X" % (name, first, last))
    for c in code_points():
        lower = chr(c).lower()
        if lower != chr(c):
            lines.append("lower %04X %s" % (c, " ".join("%04X" % ord(x) for x in lower)))
    out = os.path.join(FIXTURE_DIR, "metrics_unicode.txt")
    with open(out, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %d lines" % (out, len(lines)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(REPO_ROOT, "..", "shared", "data"),
                        help="directory of the shared data slice (default ../shared/data)")
    args = parser.parse_args()
    write_unicode()
    write_squad(args.data)
    write_rouge(args.data)


if __name__ == "__main__":
    main()
