"""lexalign.rlhf"""
