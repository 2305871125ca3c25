-- Essays of TriggerSpellcheck: one text each and no batch, readable by GetEssay like a batch's.
-- Written in the transaction that enqueues the essay's EssaySpellcheckRequested.
CREATE TABLE spellcheck_essays (
    essay_id   TEXT        PRIMARY KEY,
    storage_id TEXT        NOT NULL,
    language   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
