"""Subjective studies: raw votes in, MOS, observer screening and subject models out."""
from gameqa.subjective.analysis import (MosResult, ScreeningResult, bt500_screen, mos,
                                        print_mos_table, write_manifest)
from gameqa.subjective.mle import SubjectModelResult, mle_subject_model
from gameqa.subjective.votes import VoteTable, read_sureal_dataset, read_votes_csv

__all__ = ["VoteTable", "read_sureal_dataset", "read_votes_csv", "MosResult", "mos",
           "ScreeningResult", "bt500_screen", "SubjectModelResult", "mle_subject_model",
           "write_manifest", "print_mos_table"]
