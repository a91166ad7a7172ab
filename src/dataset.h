/* Task examples and loaders for the public datasets in their original formats.
 *
 * An example is one (input text, target text) pair plus every gold answer a
 * metric may score against. The loaders build the prompts:
 *
 *   AG News CSV        "Classify: <title> <description>"  -> class name
 *   SQuAD v1.1 JSON    "Question: <question> Context: <context>" -> first answer
 *   XSum JSON lines    "Summarize: <document>"             -> summary
 *   XSum raw .data     "Summarize: <RESTBODY>"             -> INTRODUCTION
 *   XSum .document     "Summarize: <ID.document>"          -> ID.summary
 *
 * A malformed record is skipped and counted in a struct dataset_report, which
 * also keeps the first skipped record's number and reason. A file that cannot
 * be opened or read, or whose whole structure is wrong (a SQuAD file that is
 * not JSON), fails the load with a message naming the path. All text is UTF-8. */
#ifndef CAEM_DATASET_H
#define CAEM_DATASET_H

#include "error.h"

struct example {
    char *input;       /* prompt followed by the source text */
    char *target;      /* the reference output used for training */
    char **answers;    /* every gold answer for scoring, answers[0] equal to target */
    int answer_count;  /* at least 1 */
    char *id;          /* SQuAD question id or XSum BBC id, NULL for AG News */
};

/* A loaded dataset. The examples and every string in them are owned by the
 * dataset and released by dataset_free. */
struct dataset {
    struct example *examples;
    long count;
};

#define DATASET_REPORT_ERROR_MAX 512

/* The outcome of one load. A record is one CSV line, one JSON line, one SQuAD
 * question, one XSum .data file or one XSum ID with its .document and .summary. */
struct dataset_report {
    long loaded;
    long skipped;
    /* 1-based number of the first skipped record, 0 when none was skipped: the
     * line number for CSV and JSON lines, the question's position in file
     * order for SQuAD, the file's position in name order for XSum .data, the
     * ID's position for XSum pairs. */
    long first_bad_record;
    /* Why that record was skipped, with the path and the line, JSON path or file. */
    char first_error[DATASET_REPORT_ERROR_MAX];
};

/* Loads AG News CSV: one record per line, fields "class","title","description"
 * in the RFC 4180 quoting (a quote inside a field is doubled). Class index 1-4
 * maps to "World", "Sports", "Business", "Science and Technology". Inside a
 * field the original files write a line break as a lone backslash and a dollar
 * sign as "\$", so "\$" becomes "$" and any other backslash a line break. */
int dataset_load_agnews(struct dataset *out, const char *path, struct dataset_report *report,
                        struct caem_error *err);

/* Loads SQuAD v1.1 JSON. Every question becomes one example whose target is
 * its first answer and whose answers are all its gold answers, duplicates
 * included. answer_start counts Unicode code points of the context (Python 3
 * string indexing). A question whose answer text is not found at that offset
 * is malformed. An empty or whitespace-only file gives zero examples. */
int dataset_load_squad(struct dataset *out, const char *path, struct dataset_report *report,
                       struct caem_error *err);

/* Loads XSum as JSON lines: {"document": str, "summary": str, "id": str or int}.
 * "id" may be absent. */
int dataset_load_xsum_jsonl(struct dataset *out, const char *path,
                            struct dataset_report *report, struct caem_error *err);

/* Loads XSum's extract files (<bbcid>.data) with [XSUM]URL[XSUM],
 * [XSUM]INTRODUCTION[XSUM] and [XSUM]RESTBODY[XSUM] marker lines. The
 * introduction is the summary and the rest of the body the document. path is
 * one file or a directory, whose regular files ending in ".data" are read in
 * name order; other entries and subdirectories are not read. Lines of the BBC
 * share widget ("Share this with", "Email", "Facebook", ...) are dropped from
 * the document, because the JSON-lines release of XSum has them removed. */
int dataset_load_xsum_raw(struct dataset *out, const char *path, struct dataset_report *report,
                          struct caem_error *err);

/* Loads XSum as pairs of files in one directory: ID.document (the article)
 * and ID.summary (its one-sentence summary), as in the preprocessed XSum
 * release. Blank lines and the share-widget lines that dataset_load_xsum_raw
 * drops are removed from both, and the text is trimmed. A record is one ID:
 * when ids is NULL, every ID that names a .document or a .summary file in
 * dir, in name order; otherwise the id_count listed IDs in the given order,
 * for example one split of XSum's split file. An ID with one of its two
 * files missing, or with an empty or non-UTF-8 file, is malformed and
 * reported by the missing file's path. A directory that cannot be read, or a
 * file that exists but cannot be read, fails the load with its path. */
int dataset_load_xsum_pairs(struct dataset *out, const char *dir, const char *const *ids,
                            size_t id_count, struct dataset_report *report,
                            struct caem_error *err);

/* Frees every example and leaves ds empty. Safe on an empty dataset. */
/* Strips the line break (LF or CRLF) from a line read by getline and, on the
 * first line of a file, a UTF-8 byte order mark. Returns the new length. */
size_t dataset_trim_line(char *line, size_t length, int first_line);

void dataset_free(struct dataset *ds);

#endif
