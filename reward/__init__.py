"""lexalign.reward"""
