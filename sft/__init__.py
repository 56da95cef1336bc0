"""lexalign.sft"""
